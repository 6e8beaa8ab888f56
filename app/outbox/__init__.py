"""Read the local outbox in the browser (only when no MAIL_SERVER is configured)."""

from flask import Blueprint

bp = Blueprint("outbox", __name__, url_prefix="/outbox")

from app.outbox import routes  # noqa: E402,F401
