"""Who is calling the API: `Authorization: Bearer <token>` on every route, a personal access
token (app/models.py: ApiToken) of one user. No session cookie authenticates an API route
(so the API needs no CSRF token): a request that carries only a cookie is a 401.

- A missing, unknown, expired or revoked token: 401 with `WWW-Authenticate: Bearer`.
- A token without the scope a method needs: 403. GET and HEAD need `read`; every method
  that changes something (POST, PUT, PATCH, DELETE) needs `write`.

The token is looked up once per request (`authenticated`), by the rate limiter's key or by
the blueprint's own check, whichever asks first. The secret never leaves this module: it is
not logged (app/logs.py redacts `Authorization` and `mbt_` tokens anywhere), and what the
views see is the ApiToken row.
"""

from __future__ import annotations

from flask import request
from flask_babel import _

from app import db
from app.api.problems import ApiProblem
from app.models import ApiToken, User
from app.security.limits import by_address

REALM = 'realm="microblog"'
# Where the request's token is kept once looked up: on the request itself (the WSGI environ),
# not in `g`, which outlives a request when an app context is kept open (tests, the shell).
TOKEN_KEY = "microblog.api_token"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _bearer_secret() -> str | None:
    auth = request.authorization
    if auth is None or auth.type != "bearer" or not auth.token:
        return None
    return auth.token.strip()


def authenticated() -> ApiToken | None:
    """The live token this request carries, or None (looked up once per request; its
    `last_used_at`, when due, is committed)."""
    environ = request.environ
    if TOKEN_KEY not in environ:
        secret = _bearer_secret()
        token = ApiToken.find(secret) if secret else None
        if token is not None and token in db.session.dirty:
            db.session.commit()  # last_used_at, at most once a minute (ApiToken.find)
        environ[TOKEN_KEY] = token
    return environ[TOKEN_KEY]


def require_token() -> ApiToken:
    """The request's token with the scope its method needs, or a 401 / 403 problem."""
    token = require_token_of_any_scope()
    if request.method not in READ_METHODS and not token.allows("write"):
        raise ApiProblem(403, "insufficient-scope", _(
            "This token may only read. Use a token with the \"read write\" scope."),
            headers={"WWW-Authenticate":
                     f'Bearer {REALM}, error="insufficient_scope", scope="read write"'})
    return token


def require_token_of_any_scope() -> ApiToken:
    """The request's token, or a 401 problem."""
    token = authenticated()
    if token is None:
        challenge = f"Bearer {REALM}"
        if request.authorization is not None:  # sent one, and it is no (longer a) token
            challenge += ', error="invalid_token"'
        raise ApiProblem(401, "unauthorized", _(
            "Send a valid API token: Authorization: Bearer <token>. Tokens are made on your "
            "settings page, or with POST /api/tokens."),
            headers={"WWW-Authenticate": challenge})
    return token


def current_user_id() -> int:
    """The id of the user whose token authenticated this request, without loading the user
    (a poll compares it with its object's owner)."""
    token = authenticated()
    if token is None:
        raise RuntimeError("current_user_id() outside an authenticated API request")
    return token.user_id


def current_api_user() -> User:
    """The user whose token authenticated this request (require_token has run)."""
    token = authenticated()
    if token is None:
        raise RuntimeError("current_api_user() outside an authenticated API request")
    return token.user


def by_api_user() -> str:
    """The rate limits' key: per user for a valid token, whatever its address or which of
    the user's tokens; per address for anything else (so guessing tokens is limited too)."""
    token = authenticated()
    return f"user:{token.user_id}" if token is not None else by_address()
