"""Registration, login, logout and the password reset link (the mail itself: test_email.py)."""

from __future__ import annotations

from urllib.parse import unquote

import jwt
import pytest
import sqlalchemy as sa

from app import db
from app.models import User
from tests.conftest import csrf_token, login, make_user


def users() -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(User.username).order_by(User.username)))


def register(client, with_csrf=True, **fields):
    data = dict(username="newbie", email="newbie@example.com", password="a long password",
                password2="a long password")
    data.update(fields)
    if with_csrf:
        data["csrf_token"] = csrf_token(client, "/auth/register")
    return client.post("/auth/register", data=data)


def is_logged_in(client) -> bool:
    response = client.get("/index")
    return response.status_code == 200


# --------------------------------------------------------------------------- registration

def test_register_page_shows_the_form(client):
    html = client.get("/auth/register").get_data(as_text=True)
    assert "Register" in html
    assert 'name="password2"' in html


def test_registration_creates_the_user_who_can_then_log_in(client, app):
    response = register(client, email="  Newbie@Example.COM ")
    assert response.status_code == 302
    assert response.location == "/auth/login"
    assert "Congratulations, you are now a registered user!" in client.get(
        "/auth/login").get_data(as_text=True)

    user = db.session.scalar(sa.select(User).where(User.username == "newbie"))
    assert user is not None
    assert user.email == "newbie@example.com"
    assert user.password_hash != "a long password"
    assert user.check_password("a long password")

    login(client, "newbie", "a long password")
    assert "Hi, newbie!" in client.get("/index").get_data(as_text=True)


@pytest.mark.parametrize("username", ["susan", "SUSAN", "Susan"])
def test_registration_refuses_a_taken_username_in_any_case(client, user, username):
    response = register(client, username=username)
    assert response.status_code == 200
    assert "Please use a different username." in response.get_data(as_text=True)
    assert users() == ["susan"]


@pytest.mark.parametrize("email", ["susan@example.com", "SUSAN@Example.com", " Susan@EXAMPLE.COM "])
def test_registration_refuses_a_taken_email_in_any_case(client, user, email):
    response = register(client, email=email)
    assert response.status_code == 200
    assert "Please use a different email address." in response.get_data(as_text=True)
    assert users() == ["susan"]


@pytest.mark.parametrize("fields, message", [
    ({"email": "not-an-email"}, "Invalid email address."),
    ({"email": ""}, "This field is required."),
    ({"password": "short", "password2": "short"}, "Field must be between 8 and 128 characters"),
    ({"password2": "another long password"}, "Field must be equal to password."),
    ({"username": ""}, "This field is required."),
    ({"username": "x"}, "Field must be between 2 and 64 characters long."),
    ({"username": "two words"}, "Usernames may contain only letters, digits, dots, dashes"),
    ({"username": "<script>"}, "Usernames may contain only letters, digits, dots, dashes"),
])
def test_registration_refuses_bad_input_and_writes_nothing(client, app, fields, message):
    response = register(client, **fields)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert users() == []


def test_registration_without_csrf_token_is_refused_and_writes_nothing(client, app):
    response = register(client, with_csrf=False)
    assert response.status_code == 400
    assert "The form expired or was sent from another site." in response.get_data(as_text=True)
    assert users() == []


def test_registration_with_a_forged_csrf_token_is_refused(client, app):
    response = register(client, with_csrf=False, csrf_token="forged")
    assert response.status_code == 400
    assert users() == []


def test_logged_in_user_is_sent_home_from_login_and_register(logged_in):
    assert logged_in.get("/auth/login").location == "/index"
    assert logged_in.get("/auth/register").location == "/index"
    assert logged_in.get("/auth/reset_password_request").location == "/index"


# --------------------------------------------------------------------------- login

def test_login_with_the_right_password_goes_home(client, user):
    response = login(client)
    assert response.location == "/index"
    html = client.get("/index").get_data(as_text=True)
    assert "Hi, susan!" in html
    assert "Logout" in html


@pytest.mark.parametrize("username, password", [
    ("susan", "wrong password"),
    ("susan", ""),
    ("nobody", "correct horse battery"),
])
def test_login_with_bad_credentials_is_refused(client, user, username, password):
    response = client.post("/auth/login", data={
        "username": username, "password": password, "csrf_token": csrf_token(client)},
        follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Invalid username or password" in html or "This field is required." in html
    assert not is_logged_in(client)


def test_login_with_wrong_password_says_so(client, user):
    response = client.post("/auth/login", data={
        "username": "susan", "password": "nope nope nope", "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")
    assert "Invalid username or password" in client.get("/auth/login").get_data(as_text=True)


def test_login_without_csrf_token_is_refused(client, user):
    response = client.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery"})
    assert response.status_code == 400
    assert not is_logged_in(client)


def test_remember_me_sets_the_remember_cookie(client, user):
    client.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery", "remember_me": "y",
        "csrf_token": csrf_token(client)})
    assert client.get_cookie("remember_token", domain="localhost.localdomain") is not None


def test_pages_that_need_login_redirect_to_login_with_next(client, user):
    response = client.get("/explore")
    assert response.status_code == 302
    assert response.location == "/auth/login?next=%2Fexplore"
    assert "Please log in to access this page." in client.get(
        response.location).get_data(as_text=True)


def test_login_follows_a_local_next(client, user):
    token = csrf_token(client, "/auth/login?next=%2Fexplore")
    response = client.post("/auth/login?next=%2Fuser%2Fsusan%3Fpage%3D1", data={
        "username": "susan", "password": "correct horse battery", "csrf_token": token})
    assert response.location == "/user/susan?page=1"


@pytest.mark.parametrize("target", [
    "https://evil.example/",
    "http://evil.example/index",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "/\t/evil.example/",
    "https:evil.example",
    "javascript:alert(1)",
    "evil.example",
])
def test_login_never_follows_an_external_next(client, user, target):
    response = client.post("/auth/login", query_string={"next": target}, data={
        "username": "susan", "password": "correct horse battery",
        "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location == "/index"


def test_failed_login_keeps_next_for_the_second_try(client, user):
    response = client.post("/auth/login?next=%2Fexplore", data={
        "username": "susan", "password": "wrong password", "csrf_token": csrf_token(client)})
    assert unquote(response.location) == "/auth/login?next=/explore"


# --------------------------------------------------------------------------- logout

def test_logout_by_get_only_asks_for_confirmation(logged_in):
    response = logged_in.get("/auth/logout")
    assert response.status_code == 200
    assert "Sign Out" in response.get_data(as_text=True)
    assert is_logged_in(logged_in)


def test_logout_post_without_csrf_is_refused(logged_in):
    response = logged_in.post("/auth/logout")
    assert response.status_code == 400
    assert is_logged_in(logged_in)


def test_logout_post_with_csrf_logs_out(logged_in):
    token = csrf_token(logged_in, "/index")
    response = logged_in.post("/auth/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.location == "/index"
    assert not is_logged_in(logged_in)
    assert "Login" in logged_in.get("/auth/login").get_data(as_text=True)


# --------------------------------------------------------------------------- reset link

def reset(client, token, password="a brand new password", password2=None):
    token_field = csrf_token(client, "/auth/reset_password_request")
    return client.post(f"/auth/reset_password/{token}", data={
        "password": password, "password2": password2 or password, "csrf_token": token_field})


def test_reset_link_sets_the_new_password(client, user):
    token = user.get_reset_password_token()
    page = client.get(f"/auth/reset_password/{token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<title>Reset Your Password - Microblog</title>" in html
    assert 'value="Reset Password"' in html

    response = reset(client, token)
    assert response.location == "/auth/login"
    assert "Your password has been reset." in client.get("/auth/login").get_data(as_text=True)
    db.session.expire_all()
    assert user.check_password("a brand new password")
    assert not user.check_password("correct horse battery")


def test_reset_link_refuses_mismatched_or_short_passwords(client, user):
    token = user.get_reset_password_token()
    response = reset(client, token, "a brand new password", "a different password")
    assert response.status_code == 200
    assert "Field must be equal to password." in response.get_data(as_text=True)
    response = reset(client, token, "short")
    assert response.status_code == 200
    assert "Field must be between 8 and 128 characters" in response.get_data(as_text=True)
    db.session.expire_all()
    assert user.check_password("correct horse battery")


def assert_link_refused(client, token):
    response = client.get(f"/auth/reset_password/{token}")
    assert response.status_code == 302
    assert "The password reset link is invalid or has expired." in client.get(
        "/auth/login").get_data(as_text=True)
    response = reset(client, token, "an attacker's password")
    assert response.status_code == 302
    db.session.expire_all()
    assert not db.session.scalar(sa.select(User).where(User.username == "susan")).check_password(
        "an attacker's password")


def test_expired_reset_link_is_refused(client, user):
    assert_link_refused(client, user.get_reset_password_token(expires_in=-1))


def test_reset_link_cannot_be_used_twice(client, user):
    token = user.get_reset_password_token()
    assert reset(client, token).location == "/auth/login"
    assert_link_refused(client, token)
    db.session.expire_all()
    assert user.check_password("a brand new password")


def test_reset_link_stops_working_once_the_password_changed(client, user):
    token = user.get_reset_password_token()
    user.set_password("changed some other way")
    db.session.commit()
    assert_link_refused(client, token)


@pytest.mark.parametrize("make_token", [
    lambda app, user: "not-a-token",
    lambda app, user: jwt.encode({"reset_password": user.id, "salt": user.token_salt,
                                  "exp": 9999999999}, "some other key " * 3, algorithm="HS256"),
    lambda app, user: jwt.encode({"reset_password": 12345, "exp": 9999999999},
                                 app.config["SECRET_KEY"], algorithm="HS256"),
    lambda app, user: jwt.encode({"reset_password": user.id, "exp": 9999999999},
                                 app.config["SECRET_KEY"], algorithm="HS256"),
])
def test_forged_reset_links_are_refused(client, app, user, make_token):
    assert_link_refused(client, make_token(app, user))


def test_reset_link_for_one_user_does_not_touch_another(client, user):
    other = make_user("bob")
    reset(client, user.get_reset_password_token())
    db.session.expire_all()
    assert other.check_password("correct horse battery")
