"""Errors as `application/problem+json` (RFC 9457): every error the API answers, its own
refusals and the app's (404, 405, 422, 429, 500), has a `type` that names the reason and
stays the same across versions and languages, a `title` and a `detail` in the reader's
language (Accept-Language), and the HTTP `status`. Programs branch on `type`; people read
`detail`.

A `type` is `/api/problems/<slug>` (a relative URI reference, as RFC 9457 allows); the slugs
are listed in docs/api.md. Views raise ApiProblem; the app's error handlers
(app/errors/handlers.py) answer with `http_problem` for any other error under /api/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import marshmallow as ma
from flask import Response, request
from flask_babel import _
from werkzeug.exceptions import HTTPException

MEDIA_TYPE = "application/problem+json"
PREFIX = "/api/"
TYPE_BASE = "/api/problems/"

# The slug of each HTTP error the app raises itself (routing, validation, limits, crashes).
HTTP_SLUGS = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 406: "not-acceptable", 409: "conflict", 410: "gone",
    413: "too-large", 415: "unsupported-media-type", 422: "invalid-input",
    429: "too-many-requests", 500: "server-error", 503: "unavailable",
}


class ProblemSchema(ma.Schema):
    """What every error answer holds (documentation: the body is built by `problem`)."""

    type = ma.fields.String(required=True, metadata={
        "description": "names the reason; stable (a program branches on it)"})
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(metadata={"description": "what happened, for a person"})
    errors = ma.fields.Dict(metadata={"description": "invalid input, field by field"})
    retry_after = ma.fields.Integer(metadata={"description": "seconds, as in Retry-After"})


class ApiProblem(HTTPException):
    """An error answer of the API's own: raise it from a view (or a hook)."""

    def __init__(self, status: int, slug: str, detail: str, title: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: object) -> None:
        super().__init__(description=detail)
        self.code = status
        self.slug = slug
        self.title = title
        self.headers = dict(headers or {})
        self.extra = extra

    def get_response(self, environ: object = None, scope: object = None) -> Response:
        return problem(self.code or 500, self.slug, self.description or "", title=self.title,
                       headers=self.headers, **self.extra)


@contextmanager
def refusals_as_problems(refused: type[Exception], statuses: Mapping[str, int]
                         ) -> Iterator[None]:
    """An action the pages' own rules refuse (`refused`: the centre's exception, with the
    reason's `kind` and, for a wait, `retry_after`) is the problem of that kind, with the
    reason the page gives: the status `statuses` names for it, else 409 (not in a state
    that allows it)."""
    try:
        yield
    except refused as refusal:
        kind = refusal.kind  # type: ignore[attr-defined]
        retry_after = getattr(refusal, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        raise ApiProblem(statuses.get(kind, 409), kind, str(refusal), headers=headers) from None


def is_api_request() -> bool:
    return request.path.startswith(PREFIX) or request.path == PREFIX.rstrip("/")


def problem(status: int, slug: str, detail: str, title: str | None = None,
            headers: Mapping[str, str] | None = None, **extra: object) -> Response:
    """The problem+json response. `title` defaults to the status's phrase, translated."""
    body = {"type": TYPE_BASE + slug, "title": title or _status_title(status),
            "status": status, "detail": detail, **extra}
    response = Response(json.dumps(body, ensure_ascii=False), status=status,
                        mimetype=MEDIA_TYPE)
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response


def http_problem(error: HTTPException, detail: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: object) -> Response:
    """An error the app raised (routing, webargs' validation, a rate limit) as a problem."""
    if isinstance(error, ApiProblem):
        return error.get_response()
    status = error.code or 500
    messages = (getattr(error, "data", None) or {}).get("messages")
    if messages:  # webargs: {"json": {"field": ["message", ...]}}
        extra.setdefault("errors", messages)
        detail = detail or _("Some of what you sent is not valid: see `errors`.")
    all_headers = dict(headers or {})
    allowed = getattr(error, "valid_methods", None)
    if allowed:  # a 405 names the methods the URL does take (RFC 9110)
        all_headers["Allow"] = ", ".join(allowed)
    return problem(status, HTTP_SLUGS.get(status, "error"), detail or _status_detail(error),
                   headers=all_headers, **extra)


def _status_title(status: int) -> str:
    titles = {
        400: _("Bad Request"), 401: _("Unauthorized"), 403: _("Forbidden"),
        404: _("Not Found"), 405: _("Method Not Allowed"), 409: _("Conflict"),
        410: _("Gone"), 413: _("Request Too Large"), 422: _("Unprocessable Content"),
        429: _("Too Many Requests"), 500: _("An unexpected error has occurred"),
        503: _("Service Unavailable"),
    }
    return titles.get(status, str(status))


def _status_detail(error: HTTPException) -> str:
    if error.code == 404:
        return _("There is nothing here, or it is not yours.")
    if error.code == 405:
        return _("This URL does not take this method: see Allow.")
    if error.code == 500:
        return _("The administrator has been notified. Sorry for the inconvenience!")
    # werkzeug's default descriptions are English; our own aborts pass translated ones.
    return error.description or ""
