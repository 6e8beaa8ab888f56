from datetime import timedelta

import sqlalchemy as sa
from flask import render_template, request
from flask_babel import _, format_decimal, format_timedelta, get_locale
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import db
from app.api.problems import http_problem, is_api_request, problem
from app.errors import bp
from app.security.body_limits import too_large_message
from app.security.limits import retry_after
from app.template_filters import scaled_bytes

# Routes that only ever answer JSON (the page polls them), whatever the request accepts.
JSON_ENDPOINTS = {"main.notifications", "main.task_status"}
# When to come back after the database's connections were all busy (an overload).
BUSY_RETRY_AFTER = 5


def wants_json_response() -> bool:
    if request.endpoint in JSON_ENDPOINTS:
        return True
    return request.accept_mimetypes["application/json"] >= request.accept_mimetypes["text/html"]


def _error(status: int, title: str, message: str):
    if wants_json_response():
        return {"error": title, "message": message}, status
    return render_template("errors/error.html", status=status, title=title,
                           message=message), status


@bp.app_errorhandler(CSRFError)
def csrf_error(error):
    return _error(400, _("Bad Request"),
                  _("The form expired or was sent from another site. Reload the page and try "
                    "again."))


@bp.app_errorhandler(429)
def too_many_requests(error):
    """A rate limit was hit (app/security/limits.py): say when to try again, in words and in
    Retry-After."""
    seconds = retry_after(error)
    message = _("You have made too many requests. Please try again %(when)s.",
                when=format_timedelta(timedelta(seconds=seconds), add_direction=True))
    if is_api_request():
        return http_problem(error, message, {"Retry-After": str(seconds)}, retry_after=seconds)
    body, status = _error(429, _("Too Many Requests"), message)
    if isinstance(body, dict):
        body["retry_after"] = seconds
    return body, status, {"Retry-After": str(seconds)}


@bp.app_errorhandler(413)
def request_too_large(error):
    """A body past its limit (app/security/body_limits.py), refused before it was read."""
    limit = request.max_content_length
    if limit and (own := too_large_message(_in_words(limit))):
        message = own
    else:
        size = format_decimal(limit / 1024, format="#,##0") if limit else "?"
        message = _("What you sent is too large for this page: the limit is %(size)s KiB. "
                    "Shorten it and try again.", size=size)
    if is_api_request():
        return http_problem(error, message)
    return _error(413, _("Request Too Large"), message)


def _in_words(size: int) -> str:
    """100 MiB, 1.5 KiB: a limit as a person reads it, in the reader's locale."""
    amount, unit = scaled_bytes(size)
    return f"{format_decimal(amount, format='#,##0.#')} {unit}"


@bp.app_errorhandler(HTTPException)
def http_error(error):
    if is_api_request():  # the token API's errors are problem+json (app/api/problems.py)
        return http_problem(error)
    if error.code == 404:
        return _error(404, _("Not Found"), _("Sorry, that page does not exist."))
    if error.code == 401:
        return _error(401, _("Unauthorized"), _("Please log in to access this page."))
    body, status = _error(error.code or 500, error.name, error.description or "")
    # A 405 names the methods the URL does take (RFC 9110 requires it).
    allowed = getattr(error, "valid_methods", None)
    return body, status, {"Allow": ", ".join(allowed)} if allowed else {}


@bp.app_errorhandler(500)
def internal_error(error):
    db.session.rollback()
    if is_api_request():
        return http_problem(error)
    return _error(500, _("An unexpected error has occurred"),
                  _("The administrator has been notified. Sorry for the inconvenience!"))


@bp.app_errorhandler(sa.exc.TimeoutError)
def database_busy(error):
    """Every database connection of this process stayed busy past the pool's timeout: an
    overload (a thousand clients at once), not a fault. A 503 that says when to come back,
    rather than a 500 that says the site is broken."""
    db.session.rollback()
    detail = _("The site is very busy right now. Please try again in a few seconds.")
    headers = {"Retry-After": str(BUSY_RETRY_AFTER)}
    if is_api_request():
        return problem(503, "unavailable", detail, headers=headers)
    if wants_json_response():
        return {"error": _("Service Unavailable"), "message": detail}, 503, headers
    # Not the usual error page: its navigation bar would ask the database for the user.
    return render_template("errors/busy.html", title=_("Service Unavailable"), message=detail,
                           lang=get_locale() or "en"), 503, headers
