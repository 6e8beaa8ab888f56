"""No two accounts look the same: a username is ASCII letters, digits, `.`, `-` and `_` and
nothing after them (not even a newline, which `$` lets through), and names compare without
regard to case. And no pattern in the app validates with `$` again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db
from app.cli.tasks import parse_age
from app.events import parse_id
from app.models import User
from tests.conftest import browser, csrf_token, login, make_user

APP = Path(__file__).resolve().parent.parent / "app"
RULE = "Usernames may contain only letters, digits, dots, dashes and underscores."


def usernames() -> list[str]:
    db.session.expire_all()
    return sorted(db.session.scalars(sa.select(User.username)))


def register(client, username: str):
    return client.post("/auth/register", data={
        "username": username, "email": "new@example.com", "password": "a long password",
        "password2": "a long password", "csrf_token": csrf_token(client, "/auth/register")})


def rename(client, username: str):
    return client.post("/edit_profile", data={
        "username": username, "about_me": "", "csrf_token": csrf_token(client, "/edit_profile")})


@pytest.mark.parametrize("username", ["alice\n", "alice\r\n", "newname\n", "al\nice", "alice "])
def test_registration_refuses_a_username_with_a_line_break_or_space(client, app, username):
    make_user("alice")
    response = register(client, username)
    assert response.status_code == 200
    assert RULE in response.get_data(as_text=True)
    assert usernames() == ["alice"]


@pytest.mark.parametrize("username", ["bob\n", "susan\n", "other\n"])
def test_rename_to_a_username_with_a_trailing_newline_is_refused(client, app, username):
    make_user("susan")
    make_user("bob")
    login(client)
    response = rename(client, username)
    assert response.status_code == 200
    assert RULE in response.get_data(as_text=True)
    assert usernames() == ["bob", "susan"]
    assert login(browser(app), "susan").status_code == 302  # still susan, by that name


@pytest.mark.parametrize("username", ["ALICE", "Alice", "aLiCe"])
def test_registering_a_case_variant_of_an_existing_name_is_refused(client, app, username):
    make_user("alice")
    response = register(client, username)
    assert "Please use a different username." in response.get_data(as_text=True)
    assert usernames() == ["alice"]


def test_renaming_to_a_case_variant_of_another_user_is_refused(client, app):
    make_user("susan")
    make_user("Bob")
    login(client)
    response = rename(client, "bOB")
    assert "Please use a different username." in response.get_data(as_text=True)
    assert usernames() == ["Bob", "susan"]


@pytest.mark.parametrize("typed", ["Alice", "alice", "ALICE"])
def test_login_works_in_any_case(client, app, typed):
    make_user("Alice")
    assert login(client, typed).location == "/index"


@pytest.mark.parametrize("username", ["ålice", "аlice", "alice\u200b", "ａlice"])
def test_lookalike_letters_outside_ascii_are_refused(client, app, username):
    make_user("alice")
    response = register(client, username)
    assert RULE in response.get_data(as_text=True)
    assert usernames() == ["alice"]


def test_a_profile_url_with_an_encoded_newline_is_not_found(client, app):
    make_user("alice")
    login(client, "alice")
    assert client.get("/user/alice").status_code == 200
    assert client.get("/user/alice%0A").status_code == 404
    assert client.get("/user/alice%0A/popup").status_code == 404


def test_other_patterns_take_the_whole_value():
    assert parse_id("12-3") == (12, 3)
    assert parse_id("12-3\n") is None
    assert parse_id("١٢-٣") is None  # other scripts' digits
    assert parse_age("30d").days == 30
    with pytest.raises(Exception, match="positive age"):
        parse_age("30d\nx")


def _patterns(tree: ast.AST):
    """Every string pattern given to re.compile/match/search/fullmatch or WTForms' Regexp."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if name in {"compile", "match", "search", "fullmatch", "Regexp"} and isinstance(
                first, ast.Constant) and isinstance(first.value, str):
            yield node.lineno, first.value


def test_no_pattern_in_the_app_ends_with_a_dollar_anchor():
    """`$` matches before a trailing newline: a validator must use fullmatch or \\Z."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        for line, pattern in _patterns(ast.parse(path.read_text())):
            if pattern.endswith("$") and not pattern.endswith("\\$"):
                found.append(f"{path.relative_to(APP.parent)}:{line}: {pattern!r}")
    assert found == []
