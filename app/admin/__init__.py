"""The operators' pages under /admin/ (admins only): every view behind one check.

Everyone else gets 404 from every URL under /admin, whatever the method, as for a page that
does not exist, so the pages are not advertised: anonymous visitors are not sent to the login
page, a method no route takes is not a 405, and a stranger's POST is not told that its CSRF
token is missing (the CSRF check runs after the admin check, here, not before it)."""

from flask import Blueprint, current_app
from flask_login import current_user

from app import csrf
from app.security import hide_area

bp = Blueprint("admin", __name__, url_prefix="/admin")
csrf.exempt(bp)  # checked in check_csrf, after the admin check


def is_admin() -> bool:
    return current_user.is_authenticated and current_user.is_admin


hide_area(bp, bp.url_prefix, is_admin)


@bp.before_request
def check_csrf() -> None:
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()


from app.admin import routes  # noqa: E402,F401
