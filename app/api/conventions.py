"""What every API route does alike (docs/api.md says how to use each in a new resource):

- authentication and scope before the view (app/api/auth.py), for every route but the ones
  marked `password_route` (POST /api/tokens takes HTTP Basic instead);
- `ETag` from a few columns, and 304 for `If-None-Match` before any body is built (`etag`);
- cursor pagination with a `Link: <...>; rel="next"` header (`PageArgs`, `keyset_page`);
- rate-limit headers on every answer (`RateLimit`, `RateLimit-Policy`, after the IETF
  draft), `Retry-After` on a 429 (app/errors/handlers.py);
- `Cache-Control: private, no-cache` unless a view said otherwise, and `Vary:
  Authorization`: an answer is one user's, and a poll revalidates with its ETag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import marshmallow as ma
import sqlalchemy as sa
from flask import Response, abort, current_app, g, request, url_for
from flask_babel import _
from flask_smorest import Blueprint
from werkzeug.routing import BaseConverter

from app import db
from app.api import auth, poll_cache
from app.api.problems import ApiProblem
from app.security.limits import limiter, rate_limit_fields

F = TypeVar("F", bound=Callable[..., Any])


class UtcDateTime(ma.fields.DateTime):
    """A time in an answer: RFC 3339 in UTC, `...+00:00` (the database keeps naive UTC)."""

    def _serialize(self, value: datetime | None, attr: object, obj: object,
                   **kwargs: object) -> str | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)


Timestamp = partial(UtcDateTime, dump_only=True)

DEFAULT_PAGE = 20
MAX_PAGE = 100


class Resource(Blueprint):
    """A resource of the API (`api.<name>.<view>`), nested in the API's blueprint: its
    operations are grouped under its name in the document (its tag)."""

    def route(self, rule: str, *, parameters: list | None = None, tags: list | None = None,
              **options: Any) -> Callable[[F], F]:
        return super().route(rule, parameters=parameters, tags=tags or [self.name], **options)


class IdConverter(BaseConverter):
    """`<id:export_id>`: the random ids in URLs (exports, tasks, imports): letters, digits,
    `-` and `_`. Anything else is a 404 from the URL map, before any view or query."""

    regex = r"[A-Za-z0-9_-]{1,64}"
    openapi = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def password_route(view: F) -> F:
    """Mark a view that authenticates by itself (HTTP Basic), not by token."""
    view.api_password_route = True  # type: ignore[attr-defined]
    return view


def install(bp: Blueprint) -> None:
    """The hooks of the API's blueprint (its nested resources share them)."""
    bp.before_request(_authenticate)
    bp.after_request(_finish)


def _authenticate() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, "api_password_route", False):
        return
    auth.require_token()


def _finish(response: Response) -> Response:
    if (tag := g.pop("api_etag", None)) is not None and response.status_code == 200:
        response.set_etag(tag)
    if (links := g.pop("api_links", None)) is not None:
        response.headers["Link"] = links
    response.headers.setdefault("Cache-Control", "private, no-cache")
    response.vary.add("Authorization")
    _rate_limit_headers(response)
    return response


def _rate_limit_headers(response: Response) -> None:
    """The limit nearest to running out for this request, in the draft's structured form:
    `RateLimit: "default";r=<left>;t=<seconds to reset>` and its policy (quota, window)."""
    try:
        current = limiter.current_limit
    except Exception:  # the limits' storage is down: the request went ahead, uncounted
        return
    if current is None:
        return
    response.headers.update(rate_limit_fields(current.limit.amount, current.limit.get_expiry(),
                                              current.remaining, current.reset_at))


# --------------------------------------------------------------------------- ETag

def etag(*parts: object, valid_until: datetime | None = None) -> None:
    """Give this answer an ETag made of `parts` (a few columns that change whenever the body
    would), and answer 304 at once when the client has it: a poll that finds nothing new
    costs the query for those columns and no more. The next poll with this ETag may be
    answered before the app (app/api/poll_cache.py), until `valid_until` at most: pass the
    time at which the answer goes out of date by itself, if it does."""
    tag = hashlib.blake2b(json.dumps(parts, default=str).encode(), digest_size=12).hexdigest()
    token = auth.require_token_of_any_scope()
    poll_cache.offer(tag, token.user_id, token.digest, token.expires_at, valid_until)
    if tag in request.if_none_match:
        response = Response(status=304)
        response.set_etag(tag)
        response.headers["Cache-Control"] = "private, no-cache"
        abort(response)
    g.api_etag = tag


def etag_doc() -> dict:
    """The OpenAPI of a GET that takes If-None-Match (for `blp.doc(**etag_doc())`)."""
    return {"parameters": [{"in": "header", "name": "If-None-Match", "required": False,
                            "schema": {"type": "string"},
                            "description": "the ETag of the last answer: 304 if unchanged"}],
            "responses": {"304": {"description": "Not Modified: the ETag still matches"}}}


# --------------------------------------------------------------------------- pagination

class PageArgs(ma.Schema):
    """?cursor= (from the previous page's Link header) and ?limit= (1 to 100)."""

    cursor = ma.fields.String(
        load_default=None, validate=ma.validate.Regexp(r"^[A-Za-z0-9_-]{1,200}\Z"),
        metadata={"description": "where the page starts: the `cursor` of the previous page's "
                                 "Link", "pattern": "^[A-Za-z0-9_-]{1,200}$"})
    limit = ma.fields.Integer(load_default=DEFAULT_PAGE,
                              validate=ma.validate.Range(min=1, max=MAX_PAGE))


def _decode_cursor(cursor: str) -> tuple[datetime, Any]:
    try:
        stamp, key = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
        return datetime.fromisoformat(stamp), key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        # The page it names does not exist (as a page number past the end is, on the pages).
        raise ApiProblem(404, "invalid-cursor", _(
            "This cursor is not one of ours: start again without one, then follow the "
            "Link headers.")) from None


def _encode_cursor(stamp: datetime, key: Any) -> str:
    raw = json.dumps([stamp.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def keyset_page(query: sa.Select, stamp: sa.ColumnElement, key: sa.ColumnElement,
                args: dict, row_key: Callable[[Any], tuple[datetime, Any]]) -> Sequence:
    """One page of `query`, newest first by (`stamp`, `key`), after the cursor in `args`.
    Sets the `Link` header of the next page when there is one. `row_key(row)` is a row's
    (stamp, key). No OFFSET and no count: page 1,000 costs what page 1 does."""
    limit = args["limit"]
    if args.get("cursor"):
        after_stamp, after_key = _decode_cursor(args["cursor"])
        query = query.where(sa.or_(stamp < after_stamp,
                                   sa.and_(stamp == after_stamp, key < after_key)))
    query = query.order_by(None).order_by(stamp.desc(), key.desc())
    rows = db.session.scalars(query.limit(limit + 1)).all()
    if len(rows) > limit:
        rows = rows[:limit]
        next_url = url_for(request.endpoint or "", **(request.view_args or {}),
                           **{**request.args.to_dict(), "limit": limit,
                              "cursor": _encode_cursor(*row_key(rows[-1]))})
        g.api_links = f'<{next_url}>; rel="next"'
    return rows


def accepted_doc(what: str) -> dict:
    """The headers of a 202 Accepted (for `blp.response(202, ..., headers=accepted_doc(...))`):
    Location, `what` it names, and Retry-After."""
    return {"Location": {"schema": {"type": "string"}, "description": what},
            "Retry-After": {"schema": {"type": "integer"},
                            "description": "seconds until it is worth polling"}}


def links_to(operations: dict[str, str], **parameters: str) -> dict:
    """OpenAPI links of an answer (for `blp.doc(responses={202: {"links": ...}})`): for each
    name, the operationId a program may call next (app/api/spec.py names them), with
    `parameters` taken from the answer (e.g. `export_id="$response.body#/id"`). Schemathesis
    follows them (tests/test_api_schemathesis.py)."""
    return {name: {"operationId": operation, "parameters": parameters}
            for name, operation in operations.items()}


def link_doc() -> dict:
    return {"headers": {"Link": {"description": 'the next page: <url>; rel="next"',
                                 "schema": {"type": "string"}}}}
