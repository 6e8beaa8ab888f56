"""Security headers on every kind of response (pages, JSON, errors, redirects, static files),
the cookie flags, and production's HSTS and Secure cookies. What the browser makes of the
policy (no violation on the real pages): test_browser.py."""

from __future__ import annotations

import re

import pytest

from app.email import send_email
from tests.conftest import csrf_token, login, make_user

# Headers and cookie flags are set per response, whatever the database: CI runs
# it once (SQLite).
pytestmark = pytest.mark.once


def directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.strip() for d in policy.split(";") if d.strip()}


def assert_protected(response) -> None:
    policy = directives(response)
    assert policy["default-src"] == "default-src 'self'"
    assert policy["script-src"] == "script-src 'self'"
    assert policy["style-src"] == "style-src 'self'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def set_cookies(response) -> dict[str, str]:
    """Set-Cookie headers by cookie name, attributes lower-cased."""
    return {header.split("=", 1)[0]: header.lower()
            for header in response.headers.getlist("Set-Cookie")}


def test_anonymous_pages_redirects_and_static_files_carry_the_headers(client, app):
    for url, status in [("/auth/login", 200), ("/explore", 302), ("/index", 302),
                        ("/static/css/microblog.css", 200), ("/static/js/microblog.js", 200),
                        ("/health", 200)]:
        response = client.get(url)
        assert response.status_code == status, url
        assert_protected(response)
        assert "Strict-Transport-Security" not in response.headers  # not in development


def test_signed_in_pages_and_json_carry_the_headers(logged_in, app):
    for url in ["/index", "/explore", "/user/susan", "/messages", "/outbox/"]:
        response = logged_in.get(url)
        assert response.status_code == 200, url
        assert_protected(response)
    notifications = logged_in.get("/notifications?since=0")
    assert notifications.is_json
    assert_protected(notifications)


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_error_responses_carry_the_headers(logged_in, app, accept):
    headers = {"Accept": accept}
    for response in [logged_in.get("/user/nobody-here", headers=headers),        # 404
                     logged_in.post("/follow/susan", headers=headers),            # CSRF 400
                     logged_in.put("/index", headers=headers)]:                   # 405
        assert response.status_code in (400, 404, 405)
        assert_protected(response)


def test_an_unexpected_error_page_carries_the_headers(app, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/boom")
    def boom():
        raise RuntimeError("boom")

    response = client.get("/boom")
    assert response.status_code == 500
    assert_protected(response)


def test_the_outbox_mail_body_keeps_its_own_sandbox_policy(logged_in, app):
    send_email("Hello", sender="admin@microblog.example", recipients=["susan@example.com"],
               text_body="text", html_body="<p>html</p>", sync=True)
    listing = logged_in.get("/outbox/").get_data(as_text=True)
    link = re.search(r'href="(/outbox/[^"/]+\.eml)"', listing).group(1)
    assert_protected(logged_in.get(link))  # the page around the iframe
    body = logged_in.get(f"{link}/html")
    policy = directives(body)
    assert "sandbox" in policy
    assert policy["default-src"] == "default-src 'none'"
    # Its own page may frame it, nobody else.
    assert policy["frame-ancestors"] == "frame-ancestors 'self'"
    assert body.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert body.headers["X-Content-Type-Options"] == "nosniff"


def test_session_and_remember_cookies_are_samesite_lax_and_httponly(client, app):
    make_user()
    response = client.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery", "remember_me": "y",
        "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    cookies = set_cookies(response)
    for name in ("session", "remember_token"):
        assert "samesite=lax" in cookies[name], cookies[name]
        assert "httponly" in cookies[name], cookies[name]
        assert "secure" not in cookies[name]  # development: http://127.0.0.1 must work


@pytest.fixture
def production(config_overrides):
    config_overrides.update(MICROBLOG_ENV="production", SECRET_KEY="a-production-secret",
                            # the test client's host (SERVER_NAME): production answers no other
                            PUBLIC_BASE_URL="https://localhost.localdomain")


def test_production_sends_hsts_and_secure_cookies(production, app):
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"  # behind the TLS proxy
    make_user()
    page = client.get("/auth/login")
    assert_protected(page)
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "secure" in set_cookies(page)["session"]
    response = client.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery", "remember_me": "y",
        "csrf_token": csrf_token(client)})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert "Strict-Transport-Security" in response.headers
    cookies = set_cookies(response)
    for name in ("session", "remember_token"):
        assert "secure" in cookies[name] and "samesite=lax" in cookies[name], cookies[name]
    error = client.get("/user/nobody-here")
    assert error.status_code == 404
    assert "Strict-Transport-Security" in error.headers


# --------------------------------------------------------------------------- the templates

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=|<style", re.IGNORECASE)


def assert_no_inline_code(url: str, html: str) -> None:
    for pattern in (INLINE_SCRIPT, INLINE_HANDLER, INLINE_STYLE):
        found = pattern.search(html)
        assert not found, (url, found and found.group(0))


def test_pages_have_no_inline_script_handler_or_style(client, app, user):
    """What the policy forbids, looked for in the pages as served (templates, macros and
    Bootstrap's loaders included); the browser test shows the browser agrees."""
    from app import db
    from app.models import Task, TaskStatus, utcnow

    for url in ["/auth/login", "/auth/register", "/auth/reset_password_request"]:
        assert_no_inline_code(url, client.get(url).get_data(as_text=True))

    db.session.add(Task(id="t-1", name="export_posts", description="Exporting posts...",
                        user_id=user.id, status=TaskStatus.RUNNING, active_name="export_posts",
                        progress=40, created_at=utcnow()))
    db.session.commit()
    make_user("bob")
    send_email("Hello", sender="admin@microblog.example", recipients=["susan@example.com"],
               text_body="text", html_body="<p style='color: red'>html</p>", sync=True)
    login(client)
    listing = client.get("/outbox/").get_data(as_text=True)
    message = re.search(r'href="(/outbox/[^"/]+\.eml)"', listing).group(1)
    index = client.get("/index").get_data(as_text=True)
    assert 'aria-valuenow="40"' in index  # the task alert with its bar is on the page
    assert_no_inline_code("/index", index)
    for url in ["/explore", "/user/susan", "/user/bob", "/messages", "/send_message/bob",
                "/edit_profile", "/outbox/", message, "/no-such-page"]:
        assert_no_inline_code(url, client.get(url).get_data(as_text=True))
