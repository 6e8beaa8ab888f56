"""`Idempotency-Key` on the POSTs that start work (after the IETF httpapi draft): a client that
did not hear the answer sends the same request again with the same key, and gets the first
answer instead of a second export.

- The same key (of the same user) with the same method, path and body: the first answer,
  replayed (`Idempotent-Replayed: true`), whatever happened since.
- The same key with another body: 422 (`idempotency-key-reused`), nothing done.
- The same key while the first request is still being answered: 409
  (`idempotency-key-in-use`) with Retry-After.

Answers are kept 24 hours in Redis (app.redis), per user and key. Kept: what the request did
or was refused for (2xx, and 4xx refusals such as the cooldown); not kept: errors of the
request itself (401, 403, 422 invalid input, 429) and server errors, after which the same key
may be tried again. If Redis is down the request goes ahead unguarded (it will most likely be
refused anyway: the job queue lives there too).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import redis
from flask import Response, current_app, make_response, request
from flask_babel import _
from werkzeug.datastructures import FileStorage

from app.api import auth
from app.api.problems import ApiProblem

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
KEY_PREFIX = "microblog:idempotency:"
KEEP_SECONDS = 24 * 3600
# A request being answered holds its key this long at most (a process killed mid-request
# must not hold it for a day).
PENDING_SECONDS = 60
MAX_KEY_LENGTH = 255
REPLAYED_HEADERS = ("Location", "Retry-After", "Content-Type")
NOT_KEPT = {401, 403, 422, 429}


def idempotency_doc() -> dict:
    """The OpenAPI of a POST that takes Idempotency-Key (for `blp.doc(**idempotency_doc())`)."""
    return {"parameters": [{
        "in": "header", "name": HEADER, "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "description": "the same key and body again: the first answer, not a second action"}]}


def idempotent(view: F) -> F:
    """Decorate a POST view that starts work (put it right under the route decorator, so
    that it sees the request before validation)."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise ApiProblem(400, "invalid-idempotency-key", _(
                "An Idempotency-Key must be 1 to %(max)d characters long.",
                max=MAX_KEY_LENGTH))
        token = auth.authenticated()
        assert token is not None  # the blueprint authenticated the request first
        stored_at = KEY_PREFIX + hashlib.sha256(f"{token.user_id}:{key}".encode()).hexdigest()
        fingerprint = _fingerprint()
        try:
            earlier = _claim(stored_at, fingerprint)
        except redis.exceptions.RedisError as exc:
            log.warning("Idempotency keys unavailable; request not guarded: %s", exc)
            return view(*args, **kwargs)
        if earlier is not None:
            return _replay(earlier, fingerprint)
        try:
            response = make_response(view(*args, **kwargs))
        except ApiProblem as problem:
            response = problem.get_response()
        except BaseException:
            _release(stored_at)
            raise
        _keep(stored_at, fingerprint, response)
        return response

    return guarded  # type: ignore[return-value]


def _fingerprint() -> str:
    """The request as the key promises it: method, path and body (JSON read, so that spacing
    and the order of its keys do not matter; multipart read as its fields and files, since a
    client picks a new boundary each time it sends the same upload)."""
    body: object
    if request.mimetype == "multipart/form-data":
        body = {"form": request.form.to_dict(flat=False),
                "files": {name: [[f.filename, _file_digest(f)] for f in files]
                          for name, files in request.files.lists()}}
    elif request.is_json:
        body = request.get_json(silent=True)
    else:
        body = request.get_data(as_text=True)
    text = json.dumps([request.method, request.path, body], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_digest(upload: FileStorage) -> str:
    """The SHA-256 of an uploaded file, read in pieces (an archive may be large), then
    rewound for the view."""
    digest = hashlib.sha256()
    while chunk := upload.stream.read(1024 * 1024):
        digest.update(chunk)
    upload.stream.seek(0)
    return digest.hexdigest()


def _claim(stored_at: str, fingerprint: str) -> dict | None:
    """Take the key for this request (None), or what an earlier one left under it."""
    connection = current_app.redis
    pending = json.dumps({"fingerprint": fingerprint, "pending": True})
    if connection.set(stored_at, pending, nx=True, ex=PENDING_SECONDS):
        return None
    raw = connection.get(stored_at)
    if raw is None:  # expired in between: take it now
        return _claim(stored_at, fingerprint)
    return json.loads(raw)


def _replay(earlier: dict, fingerprint: str) -> Response:
    if earlier["fingerprint"] != fingerprint:
        raise ApiProblem(422, "idempotency-key-reused", _(
            "This Idempotency-Key was used for another request. Use a new key for a new "
            "request."))
    if earlier.get("pending"):
        raise ApiProblem(409, "idempotency-key-in-use", _(
            "A request with this Idempotency-Key is still being answered. Try again in a "
            "moment."), headers={"Retry-After": "1"})
    response = Response(earlier["body"], status=earlier["status"])
    response.headers.update(earlier["headers"])
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _keep(stored_at: str, fingerprint: str, response: Response) -> None:
    if response.status_code >= 500 or response.status_code in NOT_KEPT:
        _release(stored_at)
        return
    record = {"fingerprint": fingerprint, "status": response.status_code,
              "body": response.get_data(as_text=True),
              "headers": {name: response.headers[name] for name in REPLAYED_HEADERS
                          if name in response.headers}}
    try:
        current_app.redis.set(stored_at, json.dumps(record), ex=KEEP_SECONDS)
    except redis.exceptions.RedisError as exc:
        log.warning("Idempotency key not kept: %s", exc)


def _release(stored_at: str) -> None:
    try:
        current_app.redis.delete(stored_at)
    except redis.exceptions.RedisError:
        pass  # it lapses after PENDING_SECONDS
