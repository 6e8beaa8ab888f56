"""Login sessions live on the server: logging out ends them for good (a copied session or
remember-me cookie no longer works), and a new password logs out the user's other browsers."""

from __future__ import annotations

import sqlalchemy as sa

from app import db
from app.models import User, UserSession
from tests.conftest import browser, csrf_token, login, make_user

COOKIE_DOMAIN = "localhost.localdomain"  # the tests' SERVER_NAME


def is_logged_in(client) -> bool:
    return client.get("/index").status_code == 200


def cookie(client, name: str) -> str:
    found = client.get_cookie(name, domain=COOKIE_DOMAIN)
    assert found is not None, f"no {name} cookie"
    return found.value


def replay(app, **cookies: str):
    """Another browser that only has copies of these cookies."""
    other = browser(app)
    for name, value in cookies.items():
        other.set_cookie(name, value, domain=COOKIE_DOMAIN)
    return other


def logout(client) -> None:
    response = client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})
    assert response.status_code == 302


def session_rows(user_id: int) -> int:
    db.session.expire_all()
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(UserSession).where(UserSession.user_id == user_id))


def change_password(client, current="correct horse battery", new="a fresh long password",
                    repeat=None):
    token = csrf_token(client, "/auth/change_password")
    return client.post("/auth/change_password", data={
        "current_password": current, "password": new, "password2": repeat or new,
        "csrf_token": token})


def test_a_session_cookie_copied_before_logout_is_refused_after_it(app, logged_in, user):
    stolen = cookie(logged_in, "session")
    assert is_logged_in(replay(app, session=stolen))  # the copy works while the login lasts

    logout(logged_in)
    assert not is_logged_in(logged_in)
    copy = replay(app, session=stolen)
    response = copy.get("/index")
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")
    assert session_rows(user.id) == 0


def test_a_remember_me_cookie_copied_before_logout_is_refused_after_it(app, client, user):
    response = client.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery", "remember_me": "y",
        "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    remembered = cookie(client, "remember_token")
    assert is_logged_in(replay(app, remember_token=remembered))

    logout(client)
    assert not is_logged_in(replay(app, remember_token=remembered))


def test_logging_out_one_browser_leaves_the_others_logged_in(app, user):
    first, second = browser(app), browser(app)
    login(first)
    login(second)
    assert session_rows(user.id) == 2
    logout(first)
    assert not is_logged_in(first)
    assert is_logged_in(second)


def test_a_cookie_from_before_login_sessions_counts_as_logged_out(app, user):
    """Session cookies signed before this change carry a bare user id."""
    client = browser(app)
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
    assert not is_logged_in(client)
    with client.session_transaction() as session:
        session["_user_id"] = f"{user.id}:made-up-token"
    assert not is_logged_in(client)


def test_a_session_of_one_user_cannot_be_used_for_another(app, user):
    other = make_user("mallory")
    client = browser(app)
    login(client)
    assert is_logged_in(client)
    with client.session_transaction() as session:
        _, _, session_token = session["_user_id"].partition(":")
        session["_user_id"] = f"{other.id}:{session_token}"
    assert not is_logged_in(client)


def test_a_password_change_logs_out_the_other_sessions_but_not_this_one(app, user):
    here, elsewhere = browser(app), browser(app)
    login(here)
    login(elsewhere)
    remembered = browser(app)
    remembered.post("/auth/login", data={
        "username": "susan", "password": "correct horse battery", "remember_me": "y",
        "csrf_token": csrf_token(remembered)})
    remember_token = cookie(remembered, "remember_token")

    response = change_password(here)
    assert response.status_code == 302
    assert response.location == "/edit_profile"
    assert "Your password has been changed." in here.get("/edit_profile").get_data(as_text=True)

    assert is_logged_in(here)
    assert not is_logged_in(elsewhere)
    assert not is_logged_in(replay(app, remember_token=remember_token))
    assert session_rows(user.id) == 1
    db.session.expire_all()
    assert db.session.get(User, user.id).check_password("a fresh long password")
    login(browser(app), password="a fresh long password")


def test_a_wrong_current_password_changes_nothing(app, logged_in, user):
    other = browser(app)
    login(other)
    response = change_password(logged_in, current="not my password")
    assert response.status_code == 200
    assert "Your current password is not correct." in response.get_data(as_text=True)
    response = change_password(logged_in, repeat="a different password")
    assert response.status_code == 200
    response = change_password(logged_in, new="short")
    assert response.status_code == 200
    db.session.expire_all()
    assert db.session.get(User, user.id).check_password("correct horse battery")
    assert is_logged_in(other)


def test_the_change_password_page_needs_a_login_and_csrf(app, client, logged_in):
    anonymous = browser(app)
    response = anonymous.get("/auth/change_password")
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")

    response = logged_in.post("/auth/change_password", data={
        "current_password": "correct horse battery", "password": "a fresh long password",
        "password2": "a fresh long password"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.scalar(sa.select(User)).check_password("correct horse battery")


def test_the_edit_profile_page_links_to_the_change_password_page(logged_in):
    html = logged_in.get("/edit_profile").get_data(as_text=True)
    assert 'href="/auth/change_password"' in html
    page = logged_in.get("/auth/change_password").get_data(as_text=True)
    assert 'name="current_password"' in page and 'name="password2"' in page


def test_a_password_reset_logs_out_every_session(app, client, user):
    first, second = browser(app), browser(app)
    login(first)
    login(second)
    token = user.get_reset_password_token()
    response = client.post(f"/auth/reset_password/{token}", data={
        "password": "a brand new password", "password2": "a brand new password",
        "csrf_token": csrf_token(client, "/auth/reset_password_request")})
    assert response.status_code == 302
    assert response.location == "/auth/login"
    assert not is_logged_in(first)
    assert not is_logged_in(second)
    assert session_rows(user.id) == 0


def test_sessions_older_than_the_remember_cookie_are_over(app, user):
    client = browser(app)
    login(client)
    db.session.execute(sa.update(UserSession).values(
        created_at=UserSession.oldest_valid() - app.config["REMEMBER_COOKIE_DURATION"] / 365))
    db.session.commit()
    assert not is_logged_in(client)
    login(browser(app))  # and the next login clears the stale row away
    assert session_rows(user.id) == 1
