"""The authorisation sweep of the token API: every route of tests/endpoints.py's API kinds,
every method it takes, with the tokens a stranger, a reader or a former user would hold.

- No token, a made-up one, an expired or a revoked one: 401 with `WWW-Authenticate: Bearer`.
- A session cookie alone (a logged-in browser): 401 too, so no page can be made to call the
  API on its visitor's behalf (and the API needs no CSRF token).
- bob's token on every object of alice's: 404, as for an id that never existed.
- A read-only token on every method that changes something: 403.
In every case nothing in the database changes and alice's private marker is never shown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api_helpers import bearer, token_for
from tests.endpoints import (
    API,
    API_OWNER,
    API_PUBLIC,
    ENDPOINTS,
    STATE_CHANGING,
    build_world,
    login_as,
    snapshot,
)

API_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def world(app):
    return build_world(app)


def _names(*kinds: str) -> list:
    return [pytest.param(n, id=n) for n, e in ENDPOINTS.items() if e.kind in kinds]


def _methods(app, name: str) -> list[str]:
    methods: set[str] = set()
    for rule in app.url_map.iter_rules(name):
        methods |= rule.methods & set(API_METHODS)
    return sorted(methods)


def _open(client, method: str, url: str, headers: dict):
    # A JSON body that every route would accept (the export's format, a post's body).
    body = {"format": "json", "body": "a post"} if method in STATE_CHANGING else None
    response = client.open(url, method=method, json=body, headers=headers, buffered=True)
    response.close()
    return response


def _expired(user) -> str:
    from app import db
    from app.models import ApiToken, utcnow

    secret = token_for(user, expires_in=timedelta(hours=1))
    token = db.session.scalar(db.select(ApiToken).order_by(ApiToken.id.desc()))
    token.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    return secret


def _revoked(user) -> str:
    from app import db
    from app.models import ApiToken

    secret = token_for(user)
    db.session.delete(db.session.scalar(db.select(ApiToken).where(
        ApiToken.digest == ApiToken.digest_of(secret))))
    db.session.commit()
    return secret


@pytest.mark.parametrize("credential", ["none", "made-up", "expired", "revoked",
                                        "another scheme"])
def test_without_a_live_token_every_api_route_is_a_401(app, client, world, credential):
    headers = {
        "none": {},
        "made-up": bearer("mbt_" + "x" * 43),
        "expired": bearer(_expired(world.alice)) if credential == "expired" else {},
        "revoked": bearer(_revoked(world.alice)) if credential == "revoked" else {},
        "another scheme": {"Authorization": "Token abc"},
    }[credential]
    before = snapshot(frozenset({"user.last_seen", "api_token.last_used_at"}))
    for param in _names(API, API_OWNER):
        name = param.values[0]
        url = ENDPOINTS[name].url(world)
        for method in _methods(app, name):
            response = _open(client, method, url, headers)
            assert response.status_code == 401, f"{method} {url}: {response.status_code}"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.mimetype == "application/problem+json"
            assert world.marker not in response.get_data(as_text=True)
    assert snapshot(frozenset({"user.last_seen", "api_token.last_used_at"})) == before


def test_a_logged_in_browser_session_does_not_authenticate_the_api(app, client, world):
    login_as(client, "alice")
    before = snapshot()
    for param in _names(API, API_OWNER):
        name = param.values[0]
        url = ENDPOINTS[name].url(world)
        for method in _methods(app, name):
            response = _open(client, method, url, {})
            assert response.status_code == 401, f"{method} {url}: {response.status_code}"
            assert world.marker not in response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("name", _names(API_OWNER))
def test_another_users_token_gets_404_never_the_object(app, client, world, name):
    headers = bearer(token_for(world.bob))
    url = ENDPOINTS[name].url(world)
    before = snapshot(frozenset({"user.last_seen", "api_token.last_used_at"}))
    for method in _methods(app, name):
        response = _open(client, method, url, headers)
        assert response.status_code == 404, f"{method} {url} as bob: {response.status_code}"
        assert response.mimetype == "application/problem+json"
        assert world.marker not in response.get_data(as_text=True)
    assert snapshot(frozenset({"user.last_seen", "api_token.last_used_at"})) == before


# Every write but DELETE /api/tokens: a read token may revoke itself (test_api.py).
@pytest.mark.parametrize("name", [p for p in _names(API, API_OWNER)
                                  if p.values[0] != "api.tokens.revoke_token"])
def test_a_read_token_gets_403_on_every_write(app, client, world, name):
    headers = bearer(token_for(world.alice, scope="read"))
    url = ENDPOINTS[name].url(world)
    writes = [m for m in _methods(app, name) if m in STATE_CHANGING]
    before = snapshot(frozenset({"user.last_seen", "api_token.last_used_at"}))
    for method in writes:
        response = _open(client, method, url, headers)
        assert response.status_code == 403, f"{method} {url}: {response.status_code}"
        assert "insufficient_scope" in response.headers["WWW-Authenticate"]
    assert snapshot(frozenset({"user.last_seen", "api_token.last_used_at"})) == before


@pytest.mark.parametrize("name", [n for n, e in ENDPOINTS.items()
                                  if e.kind == API_OWNER and n != "api.exports.delete"])
def test_the_owner_reaches_their_object(app, client, world, name):
    """The other side of the sweep: the URLs above do name alice's objects, and her token
    reaches each (GET shows it; an action answers, maybe with a refusal of the object's
    state, never a 404)."""
    headers = bearer(token_for(world.alice))
    url = ENDPOINTS[name].url(world)
    for method in _methods(app, name):
        response = _open(client, method, url, headers)
        assert response.status_code != 404 and response.status_code < 500, (
            f"{method} {url}: {response.status_code}")
        if method == "GET":
            assert response.status_code == 200


@pytest.mark.parametrize("name", _names(API_PUBLIC))
def test_public_api_routes_need_no_token(app, client, world, name):
    url = ENDPOINTS[name].url(world)
    method = _methods(app, name)[0]
    response = _open(client, method, url, {})
    # POST /api/tokens asks for a password (401 with a Basic challenge), not for a token.
    assert response.status_code in (200, 401), f"{method} {url}: {response.status_code}"
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
