"""The API tokens page (/settings/tokens) as a member sees it: a token created with a name, an
expiry and a scope is shown once, then listed (name, scope, created, expires, last used) without
its secret; revoked one by one; refused with a clear message when the form is wrong, when the
account holds too many, when it is created too often, and when Redis cannot hand it over (then
nothing is kept). A password change and a password reset revoke every token, and both pages say
so. Another member's token is a 404 (also swept by test_authz.py); its secret is never logged.
The same in Chromium: test_api_tokens_browser.py."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from redis import Redis

from app import db
from app.models import ApiToken, utcnow
from app.settings.routes import MAX_TOKENS_PER_USER
from tests.conftest import browser, csrf_token
from tests.endpoints import PASSWORD, fast_user, forget_request_globals, login_as, snapshot

SECRET = re.compile(r'id="new-token-secret"[^>]*value="(mbt_[^"]+)"', re.S)


@pytest.fixture
def susan(app):
    return fast_user("susan")


@pytest.fixture
def page(client, susan):
    login_as(client, "susan")
    return client


def create(client, name="backup script", expires="30", scope="read write", **kwargs):
    return client.post("/settings/tokens", data={
        "name": name, "expires": expires, "scope": scope,
        "csrf_token": csrf_token(client, "/settings/tokens")}, **kwargs)


def shown_secret(html: str) -> str | None:
    match = SECRET.search(html)
    return match.group(1) if match else None


def new_secret(client, **form) -> str:
    response = create(client, **form)
    assert response.status_code == 302 and response.location == "/settings/tokens", \
        response.get_data(as_text=True)[-3000:]
    secret = shown_secret(client.get("/settings/tokens").get_data(as_text=True))
    assert secret, "the new token is not on the page it was created for"
    return secret


def tokens_of(user) -> list[ApiToken]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id)))


def flash(html: str) -> str:
    return " ".join(re.sub(r"\s+", " ", m) for m in re.findall(
        r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', html, re.S))


def first_row(html: str) -> str:
    return re.search(r'<tr id="token-\d+".*?</tr>', html, re.S).group(0)


def listed_names(html: str) -> list[str]:
    return re.findall(r'<td class="token-name">([^<]*)</td>', html)


# --------------------------------------------------------------------------- shown once

def test_a_new_token_is_shown_once_then_listed_without_its_secret(page, susan):
    response = create(page)
    assert response.status_code == 302
    first = page.get("/settings/tokens")
    html = first.get_data(as_text=True)
    secret = shown_secret(html)
    assert secret and secret.startswith("mbt_")
    assert "Copy it now: it will not be shown again." in html
    assert first.headers["Cache-Control"] == "no-store"

    again = page.get("/settings/tokens").get_data(as_text=True)
    assert secret not in again and shown_secret(again) is None
    assert listed_names(again) == ["backup script"]
    row = first_row(again)
    assert "Read and write" in row and "Never used" in row

    token = ApiToken.find(secret)  # the secret shown is the token's, and it works
    assert token is not None and token.user_id == susan.id
    assert token.name == "backup script" and token.allows("write")
    assert token.expires_at - token.created_at == timedelta(days=30)
    # Only its hash is stored: nothing in the database holds the secret.
    assert secret not in repr(snapshot())


def test_a_token_used_since_shows_when_it_was_last_used(page, susan):
    secret = new_secret(page)
    assert ApiToken.find(secret) is not None  # what the API does with every request
    db.session.commit()
    row = first_row(page.get("/settings/tokens").get_data(as_text=True))
    assert "Never used" not in row and row.count('class="local-time"') == 3


@pytest.mark.parametrize("expires, days", [("7", 7), ("30", 30), ("90", 90), ("365", 365),
                                            ("never", None)])
def test_each_expiry_gives_the_token_that_lifetime(page, susan, expires, days):
    new_secret(page, expires=expires)
    [token] = tokens_of(susan)
    if days is None:
        assert token.expires_at is None
        assert "Never" in page.get("/settings/tokens").get_data(as_text=True)
    else:
        assert token.expires_at - token.created_at == timedelta(days=days)


def test_a_read_token_reads_and_does_not_write(page, susan):
    token = ApiToken.find(new_secret(page, scope="read"))
    assert token.allows("read") and not token.allows("write")
    html = page.get("/settings/tokens").get_data(as_text=True)
    row = first_row(html)
    assert ">Read<" in row and "Read and write" not in row


def test_the_secret_is_shown_to_the_browser_that_made_it_only(app, page, susan):
    other = browser(app)  # susan, logged in elsewhere
    login_as(other, "susan")
    create(page)
    forget_request_globals()
    assert shown_secret(other.get("/settings/tokens").get_data(as_text=True)) is None
    forget_request_globals()
    assert shown_secret(page.get("/settings/tokens").get_data(as_text=True)) is not None


def test_the_secret_is_never_logged(page, caplog):
    with caplog.at_level(logging.DEBUG):
        secret = new_secret(page)
        page.get("/settings/tokens")
        ApiToken.find(secret)
    assert "API token" in caplog.text  # the creation is logged, by id
    assert secret not in caplog.text
    assert secret[len(ApiToken.PREFIX):] not in caplog.text


def test_the_edit_profile_page_links_to_the_tokens_page(page):
    html = page.get("/edit_profile").get_data(as_text=True)
    assert 'href="/settings/tokens"' in html
    assert 'href="/auth/change_password"' in html


def test_the_page_says_that_a_new_password_revokes_the_tokens(page):
    html = page.get("/settings/tokens").get_data(as_text=True)
    assert "Changing or resetting your password revokes all your tokens." in html


def test_a_token_name_is_shown_as_text(page):
    new_secret(page, name='<img src=x onerror="alert(1)">')
    html = page.get("/settings/tokens").get_data(as_text=True)
    assert '<img src=x' not in html
    assert listed_names(html) == ['&lt;img src=x onerror=&#34;alert(1)&#34;&gt;']


# --------------------------------------------------------------------------- revoke

def test_a_revoked_token_stops_working_and_leaves_the_list(page, susan):
    keep = new_secret(page, name="keep")
    drop = new_secret(page, name="drop")
    token_id = ApiToken.find(drop).id
    response = page.post(f"/settings/tokens/{token_id}/revoke",
                         data={"csrf_token": csrf_token(page, "/settings/tokens")},
                         follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'The token "drop" was revoked' in flash(html).replace("&#34;", '"')
    assert listed_names(html) == ["keep"]
    assert ApiToken.find(drop) is None and ApiToken.find(keep) is not None


def test_another_members_token_is_a_404_and_stays(app, page, susan):
    bob = fast_user("bob")
    token, secret = ApiToken.issue(bob, "bob's", "read", None)
    db.session.commit()
    for token_id in (token.id, token.id + 1000):  # bob's, and one that never existed
        response = page.post(f"/settings/tokens/{token_id}/revoke",
                             data={"csrf_token": csrf_token(page, "/settings/tokens")})
        assert response.status_code == 404
    assert ApiToken.find(secret) is not None
    assert "bob&#39;s" not in page.get("/settings/tokens").get_data(as_text=True)


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("form, message", [
    ({"name": ""}, "Give the token a name."),
    ({"name": "   "}, "Give the token a name."),
    ({"name": "x" * 65}, "Field cannot be longer than 64 characters."),
    ({"expires": "42"}, "Not a valid choice."),
    ({"scope": "admin"}, "Not a valid choice."),
    ({"scope": "read write admin"}, "Not a valid choice."),
])
def test_a_wrong_form_says_why_and_makes_no_token(page, susan, form, message):
    before = snapshot()
    response = create(page, **form)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and message in html
    assert shown_secret(html) is None
    assert snapshot() == before


def test_an_account_holds_at_most_the_cap_of_live_tokens(page, susan):
    # Expired tokens do not count: only the live ones make the cap.
    expired, _ = ApiToken.issue(susan, "old", "read", timedelta(days=1))
    expired.expires_at = utcnow() - timedelta(hours=1)
    for n in range(MAX_TOKENS_PER_USER - 1):
        ApiToken.issue(susan, f"token {n}", "read", None)
    db.session.commit()
    new_secret(page, name="the last one")
    before = snapshot()
    response = create(page, name="one too many", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert (f"You have {MAX_TOKENS_PER_USER} tokens, the most an account may have. Revoke one "
            "you no longer use to create another.") in flash(html)
    assert shown_secret(html) is None and snapshot() == before


@pytest.mark.parametrize("config_overrides", [
    {"RATELIMIT_ENABLED": True, "RATELIMIT_API_TOKENS": "2 per minute"}])
def test_creating_tokens_is_rate_limited_per_user(page, susan):
    new_secret(page)
    new_secret(page)
    response = create(page)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(tokens_of(susan)) == 2
    # Revoking is not limited: a user cleaning up after a leak is never held back.
    for token in tokens_of(susan):
        assert page.post(f"/settings/tokens/{token.id}/revoke", data={
            "csrf_token": csrf_token(page, "/settings/tokens")}).status_code == 302
    assert tokens_of(susan) == []


def test_when_redis_cannot_hand_the_secret_over_no_token_is_kept(app, page, susan):
    # A real client of a Redis that is not there (nothing listens on port 1).
    app.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=2)
    response = create(page, follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "The token could not be created just now. Please try again in a moment." in html
    assert tokens_of(susan) == [] and shown_secret(html) is None


# --------------------------------------------------------------------------- new password

def test_changing_the_password_revokes_every_token(page, susan):
    secrets = [new_secret(page, name="one"), new_secret(page, name="two", scope="read")]
    assert "revokes your API tokens" in page.get("/auth/change_password").get_data(as_text=True)
    response = page.post("/auth/change_password", data={
        "current_password": PASSWORD, "password": "a brand new password",
        "password2": "a brand new password",
        "csrf_token": csrf_token(page, "/auth/change_password")}, follow_redirects=True)
    assert ("Your password has been changed. Your other sessions are logged out and your API "
            "tokens revoked.") in flash(response.get_data(as_text=True))
    assert all(ApiToken.find(secret) is None for secret in secrets)
    assert listed_names(page.get("/settings/tokens").get_data(as_text=True)) == []


def test_resetting_the_password_revokes_every_token(app, page, susan):
    secret = new_secret(page)
    reset = browser(app)  # the reset link, opened by someone who is not logged in
    link = f"/auth/reset_password/{susan.get_reset_password_token()}"
    form = reset.get(link).get_data(as_text=True)
    assert "revokes your API tokens" in form
    response = reset.post(link, data={
        "password": "a brand new password", "password2": "a brand new password",
        "csrf_token": csrf_token(reset, link)}, follow_redirects=True)
    assert ("Your password has been reset. Your API tokens, if you had any, are revoked."
            in flash(response.get_data(as_text=True)))
    assert ApiToken.find(secret) is None
    assert tokens_of(susan) == []
