"""A member's settings pages: /settings/tokens, the personal access tokens of the API."""

from flask import Blueprint

bp = Blueprint("settings", __name__)

from app.settings import routes  # noqa: E402,F401
