"""The operators' pages under /admin/ (admins only): every view behind one check.

Everyone else gets 404, as for a page that does not exist, so the pages are not advertised:
anonymous visitors are not sent to the login page, and a stranger's POST is not told that its
CSRF token is missing (the CSRF check runs after the admin check, here, not before it)."""

from flask import Blueprint, abort, current_app
from flask_login import current_user

from app import csrf

bp = Blueprint("admin", __name__, url_prefix="/admin")
csrf.exempt(bp)  # checked in admins_only, after the admin check


@bp.before_request
def admins_only() -> None:
    if not current_user.is_authenticated or not current_user.is_admin:
        abort(404)
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()


from app.admin import routes  # noqa: E402,F401
