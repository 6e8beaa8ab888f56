"""The authorisation sweep: every endpoint of `app.url_map` is classified in tests/endpoints.py
(public, members, owner-only, admin-only); an anonymous visitor gets the login page (or a
404) from every
non-public one, and another member gets a 404 from every object of alice's — never the object.
An endpoint nobody classified fails the first test."""

from __future__ import annotations

import pytest

from tests.conftest import csrf_token
from tests.endpoints import (
    ADMIN,
    ENDPOINTS,
    MEMBERS,
    OWNER,
    PUBLIC,
    build_world,
    fast_user,
    login_as,
    snapshot,
)

EVERY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.fixture
def world(app):
    return build_world(app)


def _params(kinds: set[str]) -> list:
    params = []
    for name, endpoint in ENDPOINTS.items():
        if endpoint.kind not in kinds:
            continue
        params.append(pytest.param(name, id=name))
    return params


def _methods(app, name: str) -> list[str]:
    methods: set[str] = set()
    for rule in app.url_map.iter_rules(name):
        methods |= rule.methods & {"GET", "POST", "PUT", "PATCH", "DELETE"}
    return sorted(methods)


def _request(client, method: str, url: str, token: str | None):
    data = {"csrf_token": token} if token else None
    return client.open(url, method=method, data=data)


def test_every_endpoint_is_classified(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    unclassified = sorted(endpoints - ENDPOINTS.keys())
    assert not unclassified, (
        f"classify these endpoints in tests/endpoints.py ENDPOINTS: {unclassified}")
    stale = sorted(ENDPOINTS.keys() - endpoints)
    assert not stale, f"ENDPOINTS names endpoints that no longer exist: {stale}"


def _refused_to_anonymous(response) -> bool:
    if response.status_code in (401, 404):
        return True
    return response.status_code == 302 and response.location.startswith("/auth/login")


@pytest.mark.parametrize("name", _params({MEMBERS, OWNER, ADMIN}))
def test_an_anonymous_visitor_gets_the_login_page_never_the_object(app, client, world, name):
    url = ENDPOINTS[name].url(world)
    token = csrf_token(client, "/auth/login")
    before = snapshot()
    for method in _methods(app, name):
        response = _request(client, method, url, token if method != "GET" else None)
        assert _refused_to_anonymous(response), (
            f"{method} {url} as anonymous: {response.status_code} {response.location}")
        assert world.marker not in response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("name", _params({OWNER, ADMIN}))
def test_another_member_gets_404_never_the_object(app, client, world, name):
    url = ENDPOINTS[name].url(world)
    login_as(client, "bob")
    token = csrf_token(client, "/index")
    before = snapshot()
    for method in _methods(app, name):
        response = _request(client, method, url, token if method != "GET" else None)
        assert response.status_code == 404, f"{method} {url} as bob: {response.status_code}"
        assert world.marker not in response.get_data(as_text=True)
    assert snapshot() == before


def _admin_area_urls(world) -> list[str]:
    """Every admin endpoint's URL, the area's bare prefix, and a URL under it that no route
    serves: a stranger must not tell them apart."""
    urls = [e.url(world) for e in ENDPOINTS.values() if e.kind == ADMIN]
    return [*urls, "/admin", "/admin/no-such-page"]


@pytest.mark.parametrize("who", ["anonymous", "bob"])
def test_every_method_on_every_admin_url_is_a_404_for_non_admins(app, client, world, who):
    """Not 405 for a method the route does not take, nor a redirect for the bare prefix:
    either would tell a prober that the page exists."""
    if who == "bob":
        login_as(client, "bob")
    token = csrf_token(client, "/auth/login" if who == "anonymous" else "/index")
    before = snapshot()
    for url in _admin_area_urls(world):
        for method in EVERY_METHOD:
            response = _request(client, method, url, token if method != "GET" else None)
            assert response.status_code == 404, f"{method} {url} as {who}: {response.status_code}"
            assert "Allow" not in response.headers, f"{method} {url} as {who}"
    assert snapshot() == before


def test_an_admin_still_hears_that_a_method_is_not_allowed(app, client, world):
    carol = fast_user("carol")
    carol.admin = True
    from app import db

    db.session.commit()
    login_as(client, "carol")
    response = client.open(ENDPOINTS["admin.jobs_page"].url(world), method="POST",
                           data={"csrf_token": csrf_token(client, "/index")})
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("name", [n for n, e in ENDPOINTS.items() if e.kind == OWNER])
def test_the_owner_reaches_their_object(app, client, world, name):
    """The other side of the sweep: the URLs built above do name alice's objects."""
    url = ENDPOINTS[name].url(world)
    login_as(client, "alice")
    token = csrf_token(client, "/index")
    for method in _methods(app, name):
        response = _request(client, method, url, token if method != "GET" else None)
        if method == "GET":
            assert response.status_code == 200, f"GET {url}: {response.status_code}"
            assert world.marker in response.get_data(as_text=True)
        else:
            assert response.status_code in (200, 302), f"{method} {url}: {response.status_code}"


def test_dismissing_ones_own_task_is_what_the_owner_check_guards(client, world):
    from app import db

    login_as(client, "alice")
    client.post(ENDPOINTS["main.dismiss_task"].url(world),
                data={"csrf_token": csrf_token(client, "/index")})
    db.session.refresh(world.task)
    assert world.task.dismissed


def test_the_outbox_lists_only_the_visitors_own_mail(client, world):
    login_as(client, "bob")
    html = client.get("/outbox/").get_data(as_text=True)
    assert world.mail not in html and world.marker not in html


@pytest.mark.parametrize("name", [n for n, e in ENDPOINTS.items() if e.kind == PUBLIC])
def test_public_endpoints_answer_an_anonymous_visitor(app, client, world, name):
    url = ENDPOINTS[name].url(world)
    response = client.get(url)
    assert response.status_code in (200, 302), f"GET {url}: {response.status_code}"
    assert world.marker.encode() not in response.get_data()  # bytes: an icon is no text


def _members_pages() -> list:
    """The members' endpoints that have a page to look at (POST-only ones have none)."""
    from app import create_app  # the URL map, known before any test runs

    url_map = create_app(commands=False).url_map
    return [param for param in _params({MEMBERS})
            if any("GET" in rule.methods for rule in url_map.iter_rules(param.values[0]))]


@pytest.mark.parametrize("name", _members_pages())
def test_members_pages_show_a_member_no_one_elses_private_object(app, client, world, name):
    """bob visits every members' page with alice's objects in the database: he sees her
    profile and posts (public to members), never her messages, tasks or mail."""
    login_as(client, "bob")
    # Read first: a view may close the session it shares with this test (/events does).
    privates = (world.message.body, world.task.description, f"Subject {world.marker}",
                world.api_token.name)
    response = client.get(ENDPOINTS[name].url(world))
    assert response.status_code in (200, 302)
    html = response.get_data(as_text=True)
    for private in privates:
        assert private not in html, f"{name} shows bob alice's {private!r}"
