"""Error pages: 404, 405, 400 (CSRF) and 500, as HTML for browsers and JSON for scripts."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from app import db
from app.models import User
from tests.conftest import csrf_token, login, make_user

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


def test_unknown_page_is_a_404_page_for_a_browser(client, app):
    response = client.get("/no/such/page", headers=HTML)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "Not Found" in html
    assert "Sorry, that page does not exist." in html
    assert 'href="/index"' in html  # a way back


def test_unknown_page_is_json_for_a_client_that_asks_for_json(client, app):
    response = client.get("/no/such/page", headers=JSON)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "Not Found",
                                   "message": "Sorry, that page does not exist."}


def test_a_404_from_a_view_is_the_same_page(logged_in):
    response = logged_in.get("/user/nobody", headers=HTML)
    assert response.status_code == 404
    assert "Sorry, that page does not exist." in response.get_data(as_text=True)


def test_wrong_method_is_405(logged_in):
    response = logged_in.get("/follow/susan", headers=HTML)
    assert response.status_code == 405
    assert "Method Not Allowed" in response.get_data(as_text=True)
    response = logged_in.get("/follow/susan", headers=JSON)
    assert response.status_code == 405
    assert response.get_json()["error"] == "Method Not Allowed"


def test_missing_csrf_token_is_a_400_page(client, app):
    response = client.post("/auth/login", data={"username": "x", "password": "y"}, headers=HTML)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Bad Request" in html
    assert "The form expired or was sent from another site." in html


def test_missing_csrf_token_is_json_for_a_json_client(client, app):
    response = client.post("/auth/login", data={"username": "x", "password": "y"}, headers=JSON)
    assert response.status_code == 400
    assert response.get_json()["error"] == "Bad Request"


def test_error_page_keeps_the_logged_in_navigation(logged_in):
    html = logged_in.get("/no/such/page", headers=HTML).get_data(as_text=True)
    assert "Logout" in html
    assert "Profile" in html


# --------------------------------------------------------------------------- 500

@pytest.fixture
def failing_app(app):
    """The app with a view that writes a row, then fails before it commits."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def half_done():
        db.session.add(User(username="halfwritten", email="half@example.com"))
        db.session.flush()
        raise RuntimeError("boom")

    app.add_url_rule("/half-done", "half_done", half_done)
    return app


def test_an_exception_is_a_500_page_and_the_session_is_rolled_back(failing_app, client):
    response = client.get("/half-done", headers=HTML)
    assert response.status_code == 500
    html = response.get_data(as_text=True)
    assert "An unexpected error has occurred" in html
    assert "The administrator has been notified." in html
    assert "boom" not in html
    assert "Traceback" not in html
    # The flushed row is gone: the handler rolled the transaction back.
    assert db.session.scalar(sa.select(User).where(User.username == "halfwritten")) is None


def test_an_exception_is_json_for_a_json_client(failing_app, client):
    response = client.get("/half-done", headers=JSON)
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "An unexpected error has occurred",
        "message": "The administrator has been notified. Sorry for the inconvenience!"}


def test_the_app_keeps_working_after_a_500(failing_app, client):
    assert client.get("/half-done", headers=HTML).status_code == 500
    token = csrf_token(client, "/auth/register")
    response = client.post("/auth/register", data={
        "username": "after", "email": "after@example.com", "password": "a long password",
        "password2": "a long password", "csrf_token": token})
    assert response.status_code == 302
    db.session.expire_all()
    assert list(db.session.scalars(sa.select(User.username))) == ["after"]


def test_the_500_is_logged(failing_app, client, caplog, monkeypatch):
    # The test session runs the migrations in-process, and Alembic's logging setup disables
    # loggers that already exist (the "app" logger does once a worker app was built).
    monkeypatch.setattr(failing_app.logger, "disabled", False)
    with caplog.at_level("ERROR"):
        client.get("/half-done", headers=HTML)
    assert any("boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.fixture
def one_connection(config_overrides):
    """An app whose database pool has one connection and waits a fifth of a second for it."""
    from config import engine_options

    config_overrides["SQLALCHEMY_ENGINE_OPTIONS"] = dict(
        engine_options(os.environ["DATABASE_URL"]), pool_size=1, max_overflow=0,
        pool_timeout=0.2)


@pytest.mark.parametrize("url", ["/explore", "/api/users/me"])
def test_a_request_that_finds_every_database_connection_busy_is_told_to_come_back(
        one_connection, app, client, url):
    """An overload (every connection of the process taken, e.g. by a thousand pollers) is a 503
    with Retry-After, a page or a problem+json as the URL calls for, never a 500."""
    make_user()
    headers = {}
    if url.startswith("/api/"):
        from app.models import ApiToken

        _, secret = ApiToken.issue(db.session.scalar(sa.select(User)), "t", "read", None)
        db.session.commit()
        headers["Authorization"] = f"Bearer {secret}"
    else:
        login(client)
    db.session.commit()  # gives the session's connection back to the pool
    with db.engine.connect() as held:  # the pool's only connection, busy elsewhere
        held.execute(sa.text("SELECT 1"))
        response = client.get(url, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "very busy" in response.get_data(as_text=True)
    if url.startswith("/api/"):
        assert response.mimetype == "application/problem+json"
        assert response.json["type"].endswith("/unavailable")
    # Once a connection is free again, the same request is answered.
    assert client.get(url, headers=headers).status_code == 200
