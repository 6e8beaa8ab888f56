"""CSRF on every state-changing route, found by walking the URL map (every rule that takes
POST, PUT, PATCH or DELETE): with CSRF enforced, as it is by default, a request without a
token, with a made-up one or with another session's token is refused with a 400 page that
says why, and changes nothing; the same request with the right token gets through (so the
token is what was refused). GET on those routes changes nothing either."""

from __future__ import annotations

import pytest

from app import create_app
from tests.conftest import config_for_tests, csrf_token
from tests.endpoints import (
    ADMIN,
    API_KINDS,
    ENDPOINTS,
    PASSWORD,
    PUBLIC,
    STATE_CHANGING,
    build_world,
    logged_in_as,
    login_as,
    snapshot,
)

# A request without the right token is refused before any view reads the database:
# CI runs it once (SQLite).
pytestmark = pytest.mark.once

RULES = [(rule.endpoint, rule.rule, sorted(rule.methods & STATE_CHANGING))
         for rule in sorted(create_app(config_for_tests()).url_map.iter_rules(),
                            key=lambda r: r.rule)
         if rule.methods & STATE_CHANGING and ENDPOINTS[rule.endpoint].kind not in API_KINDS]
IDS = [f"{endpoint}:{path}" for endpoint, path, _ in RULES]
REFUSAL = "The form expired or was sent from another site."

# A valid value for every field of every form: extra fields are ignored, so each route gets
# what it needs and the token is the only thing wrong with a refused request.
VALID_FIELDS = {"post": "a post", "message": "a message", "about_me": "about", "username":
                "alice", "password": PASSWORD, "password2": PASSWORD,
                "email": "new@example.com", "remember_me": "", "submit": "Submit"}


@pytest.fixture
def world(app):
    return build_world(app)


def _url(world, endpoint: str, path: str) -> str:
    """The route's URL for alice's objects (rules of one endpoint differ only in spelling:
    / and /index)."""
    from flask import url_for

    if "<" not in path:
        return url_for(endpoint) if path != "/" else "/"
    return ENDPOINTS[endpoint].url(world)


def test_the_sweep_found_the_state_changing_routes():
    endpoints = {endpoint for endpoint, _, _ in RULES}
    # Not a list to maintain: a floor, so that a broken walk cannot pass with nothing in it.
    assert {"auth.login", "auth.logout", "main.index", "main.follow",
            "main.dismiss_task"} <= endpoints


def _bad_tokens(client) -> dict[str, str | None]:
    app = client.application
    with app.app_context():  # a separate visitor: its own `g`, its own session
        other = csrf_token(app.test_client(), "/auth/login")
    return {"no token": None, "made-up token": "not-a-token", "another session's token": other}


def _check_refusals(client, url: str, methods: list[str], is_logged_in) -> None:
    for method in methods:
        for label, token in _bad_tokens(client).items():
            data = dict(VALID_FIELDS, **({"csrf_token": token} if token else {}))
            before = snapshot()
            response = client.open(url, method=method, data=data,
                                   headers={"Accept": "text/html"})
            assert response.status_code == 400, f"{method} {url} with {label}"
            assert REFUSAL in response.get_data(as_text=True)
            assert snapshot() == before, f"{method} {url} with {label} changed data"
            assert is_logged_in(), f"{method} {url} with {label} logged the user out"


def _login_for(client, world, endpoint: str) -> None:
    """alice, made an admin first for the operators' routes (to everyone else they are a 404
    before any token is looked at: see test_authz)."""
    if ENDPOINTS[endpoint].kind == ADMIN:
        from app import db

        world.alice.admin = True
        db.session.commit()
    login_as(client, "alice")


@pytest.mark.parametrize("endpoint,path,methods", RULES, ids=IDS)
def test_a_member_without_the_right_token_is_refused_and_nothing_changes(
        client, world, endpoint, path, methods):
    _login_for(client, world, endpoint)
    _check_refusals(client, _url(world, endpoint, path), methods,
                    lambda: logged_in_as(client, "alice"))


@pytest.mark.parametrize("endpoint,path,methods",
                         [r for r in RULES if ENDPOINTS[r[0]].kind == PUBLIC],
                         ids=[i for i, r in zip(IDS, RULES, strict=True)
                              if ENDPOINTS[r[0]].kind == PUBLIC])
def test_an_anonymous_visitor_without_the_right_token_is_refused(
        client, world, endpoint, path, methods):
    _check_refusals(client, _url(world, endpoint, path), methods, lambda: True)


@pytest.mark.parametrize("endpoint,path,methods", RULES, ids=IDS)
def test_the_same_request_with_the_token_gets_through(client, world, endpoint, path, methods):
    _login_for(client, world, endpoint)
    url = _url(world, endpoint, path)
    for method in methods:
        data = dict(VALID_FIELDS, csrf_token=csrf_token(client, "/index"))
        response = client.open(url, method=method, data=data)
        assert response.status_code != 400, f"{method} {url}"
        assert REFUSAL not in response.get_data(as_text=True)
        if not logged_in_as(client, "alice"):  # that was the logout
            login_as(client, "alice")


@pytest.mark.parametrize("endpoint,path,methods", RULES, ids=IDS)
def test_get_on_a_state_changing_route_changes_nothing(client, world, endpoint, path, methods):
    _login_for(client, world, endpoint)
    url = _url(world, endpoint, path)
    query = dict(VALID_FIELDS, csrf_token=csrf_token(client, "/index"))
    before = snapshot()
    response = client.get(url, query_string=query)
    assert response.status_code in (200, 302, 405)
    assert snapshot() == before
    assert logged_in_as(client, "alice"), f"GET {url} logged the user out"
