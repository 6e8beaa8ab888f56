"""Property-based fuzzing (Hypothesis) of every route of the URL map and every form of
app/*/forms.py: weird unicode (NULs, RTL marks, emoji, characters that grow when lowercased),
huge values, missing, duplicated and unknown fields, wrong types and JSON bodies. Whatever
comes in: never a 5xx, and never a half-saved object — a refused request changes no row, and
a row an accepted request writes fits its column (SQLite does not enforce VARCHAR lengths;
PostgreSQL and MariaDB do, so an overlong value is a 500 there) and holds no NUL (PostgreSQL
refuses those)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import url_for
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, SubmitField
from wtforms.fields.core import UnboundField
from wtforms.validators import Email, EqualTo, Length, Regexp

import app as app_package
from app import create_app
from tests.conftest import CSRF, config_for_tests, csrf_token
from tests.endpoints import (
    ADMIN,
    API_KINDS,
    ENDPOINTS,
    PUBLIC,
    STATE_CHANGING,
    build_world,
    forget_request_globals,
    login_as,
    snapshot,
)

FUZZ = settings(max_examples=30, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

_APP = create_app(config_for_tests())
# The token API's routes take JSON of their own shapes, described by its OpenAPI document:
# they are fuzzed from it by Schemathesis (docs/api.md), not as forms.
_PAGE_RULES = [r for r in _APP.url_map.iter_rules() if ENDPOINTS[r.endpoint].kind not in API_KINDS]
GET_RULES = sorted((r for r in _PAGE_RULES if "GET" in r.methods), key=lambda r: r.rule)
POST_RULES = sorted((r for r in _PAGE_RULES if r.methods & STATE_CHANGING), key=lambda r: r.rule)


def _rule_id(rule) -> str:
    return f"{rule.endpoint}:{rule.rule}"


# --------------------------------------------------------------------------- the forms

def form_classes() -> list[type[FlaskForm]]:
    """Every FlaskForm defined in a `forms` module of the app package."""
    classes = []
    for module_info in pkgutil.walk_packages(app_package.__path__, "app."):
        if module_info.name.rsplit(".", 1)[-1] != "forms":
            continue
        module = importlib.import_module(module_info.name)
        classes += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, FlaskForm) and cls.__module__ == module.__name__]
    return classes


def form_fields(cls: type[FlaskForm]) -> dict[str, UnboundField]:
    return {name: value for name in dir(cls)
            if isinstance(value := getattr(cls, name, None), UnboundField)}


def _validators(field: UnboundField) -> list:
    return list(field.kwargs.get("validators") or (field.args[1] if len(field.args) > 1 else []))


# --------------------------------------------------------------------------- strategies

NASTY = ["\x00", "\u202e", "\u200f", "\u2066", "\ufeff", "\u0130", "ß", "\u0301", "\u2028",
         "👩\u200d👩\u200d👧\u200d👦", "🦄", "\U0010fffd", "\x7f", "\x1b", "\r\n", "\t", " ",
         "'", '"', "<", ">", "&", "%00", "\\", "{{7*7}}", "</textarea>", "NaN", "-1"]
WEIRD_TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(NASTY)),
                      max_size=20).map("".join)
HUGE = st.builds(lambda s, n: s * n, st.sampled_from(["a", "\u0130", "🦄", "\x00", " ", "<"]),
                 st.sampled_from([65, 121, 141, 281, 1000, 100_000]))
LABEL = st.text(st.sampled_from("abcxyz\u0130\u00e9ß"), min_size=1, max_size=20)
EMAIL = st.builds(lambda local, labels: f"{local}@{'.'.join(labels)}.com",
                  st.one_of(st.from_regex(r"[a-z0-9.]{1,20}", fullmatch=True), LABEL),
                  st.lists(LABEL, min_size=1, max_size=5))


def plausible(field: UnboundField):
    """A value the field's own validators would likely accept (the fuzzer mutates it)."""
    if issubclass(field.field_class, SubmitField):
        return st.just("Submit")
    if issubclass(field.field_class, BooleanField):
        return st.sampled_from(["y", "on", ""])
    validators = _validators(field)
    low, high = 1, 300
    for v in validators:
        if isinstance(v, Length):
            low, high = max(low, v.min if v.min > 0 else low), v.max if v.max > 0 else high
    for v in validators:
        if isinstance(v, Email):
            return EMAIL
        if isinstance(v, Regexp):
            return st.from_regex(v.regex, fullmatch=True).map(lambda s: s[:high]).filter(
                lambda s: len(s) >= low)
    return st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=low, max_size=high)


FIELDS: dict[str, UnboundField] = {}
for _cls in form_classes():
    for _name, _field in form_fields(_cls).items():
        FIELDS.setdefault(_name, _field)


def field_value(name: str):
    values = [WEIRD_TEXT, HUGE]
    if name in FIELDS:
        values.insert(0, plausible(FIELDS[name]))
    return st.one_of(*values)


@st.composite
def form_data(draw, names: list[str], csrf: str):
    """(field, value) pairs: each field plausible, weird, huge, missing or duplicated, in any
    order, sometimes with unknown fields, and usually a valid CSRF token."""
    pairs: list[tuple[str, str]] = []
    values: dict[str, str] = {}
    for name in names:
        if name == "csrf_token":
            continue
        action = draw(st.sampled_from(["value", "value", "value", "missing", "duplicate"]))
        if action == "missing":
            continue
        value = draw(field_value(name))
        equal_to = [v.fieldname for v in _validators(FIELDS[name]) if isinstance(v, EqualTo)] \
            if name in FIELDS else []
        if equal_to and equal_to[0] in values and draw(st.booleans()):
            value = values[equal_to[0]]  # "repeat password" usually repeats it
        values[name] = value
        pairs.append((name, value))
        if action == "duplicate":
            pairs.append((name, draw(field_value(name))))
    pairs += draw(st.lists(st.tuples(WEIRD_TEXT, WEIRD_TEXT), max_size=2))
    token = draw(st.sampled_from([csrf] * 8 + ["", "bogus"]))
    if token:
        pairs.append(("csrf_token", token))
    return draw(st.permutations(pairs))


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | WEIRD_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(WEIRD_TEXT, children,
                                                                      max_size=3),
    max_leaves=8)


def json_body(names: list[str]):
    """A JSON body: anything at all, or an object with the form's field names."""
    return st.one_of(JSON_VALUE, st.dictionaries(st.sampled_from(names or ["x"]), JSON_VALUE,
                                                 max_size=len(names) + 1))


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def world(app):
    return build_world(app)


def _as_visitor(client, rule) -> None:
    """The auth forms are for anonymous visitors; everything else is fuzzed as alice, made an
    admin for the operators' pages (to anyone else they are a 404 before any form is read)."""
    forget_request_globals()
    kind = ENDPOINTS[rule.endpoint].kind
    if kind == ADMIN:
        from app import db
        from app.models import User

        alice = db.session.scalar(sa.select(User).where(User.username == "alice"))
        alice.admin = True
        db.session.commit()
    if kind != PUBLIC:
        login_as(client, "alice")


def _url(world, rule, **overrides) -> str:
    args = {}
    if rule.arguments:
        real = urlsplit(ENDPOINTS[rule.endpoint].url(world)).path
        args = _APP.url_map.bind("localhost.localdomain").match(
            real, method=sorted(rule.methods)[0])[1]
    args.update(overrides)
    path = url_for(rule.endpoint, **args)
    return path if rule.rule != "/" else "/"


FORM_FIELD = re.compile(r'<(?:input|textarea|select)\b[^>]*\bname="([^"]+)"')


def _form_field_names(client, url: str, rule) -> list[str]:
    """The fields of the page's form (GET on the same URL); a POST-only route is a button
    whose form has only the CSRF token (EmptyForm)."""
    if "GET" not in rule.methods:
        return ["csrf_token", "submit"]
    html = client.get(url).get_data(as_text=True)
    forms = re.findall(r"<form\b([^>]*method=\"post\"[^>]*)>(.*?)</form>", html, re.S | re.I)
    # The page's own form posts to the page (a list's buttons post elsewhere); else it is the
    # last one (the logout button of the navigation is on every page, first).
    own = [body for attrs, body in forms if f'action="{urlsplit(url).path}"' in attrs]
    form = own[-1] if own else forms[-1][1] if forms else None
    return list(dict.fromkeys(FORM_FIELD.findall(form))) if form else ["csrf_token"]


def _token(client, url: str, rule) -> str:
    """A CSRF token of the client's session, from the route's own page when it has one."""
    if "GET" in rule.methods:
        match = CSRF.search(client.get(url).get_data(as_text=True))
        if match:
            return match.group(1) or match.group(2)
    anonymous = ENDPOINTS[rule.endpoint].kind == PUBLIC
    return csrf_token(client, "/auth/login" if anonymous else "/explore")


def _changed_rows(before: dict, after: dict) -> dict[str, list[tuple]]:
    return {table: [row for row in rows if row not in set(before.get(table, []))]
            for table, rows in after.items()}


def _assert_rows_fit_their_columns(before: dict, after: dict) -> None:
    from app import db

    tables = {t.name: t for t in db.metadata.sorted_tables}
    for table, rows in _changed_rows(before, after).items():
        columns = [c for c in tables[table].columns if f"{table}.{c.name}" != "user.last_seen"]
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                if not isinstance(value, str):
                    continue
                assert "\x00" not in value, f"{table}.{column.name} saved a NUL: {value!r}"
                length = getattr(column.type, "length", None)
                assert length is None or len(value) <= length, (
                    f"{table}.{column.name} saved {len(value)} characters into "
                    f"VARCHAR({length}) (PostgreSQL and MariaDB refuse that): {value!r}")


def _check(response, before: dict, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code}"
    after = snapshot()
    # Accepted: a redirect after a form, or a JSON answer (dismiss answers JSON when asked);
    # anything else (an error, or the form shown again with its errors) is a refusal.
    accepted = response.status_code == 302 or (
        response.status_code < 400 and response.mimetype == "application/json")
    if not accepted:
        assert after == before, f"{what}: refused ({response.status_code}) but data changed"
    _assert_rows_fit_their_columns(before, after)


# --------------------------------------------------------------------------- the tests

def test_every_form_is_reached_by_the_fuzzer(app, client, world):
    """Each form class's fields appear on some route's page, so the form is fuzzed."""
    seen: set[str] = set()
    for rule in POST_RULES:
        c = app.test_client()
        _as_visitor(c, rule)
        seen |= set(_form_field_names(c, _url(world, rule), rule))
    for cls in form_classes():
        missing = set(form_fields(cls)) - seen
        assert not missing, f"{cls.__name__} fields {missing} are on no page the fuzzer posts"


@pytest.mark.parametrize("rule", POST_RULES, ids=_rule_id)
def test_fuzzed_form_posts_never_fail_or_half_save(app, client, world, rule):
    _as_visitor(client, rule)
    url = _url(world, rule)
    names = _form_field_names(client, url, rule)
    token = _token(client, url, rule)
    method = sorted(rule.methods & STATE_CHANGING)[0]

    @FUZZ
    @given(data=form_data(names, token), accept=st.sampled_from(["text/html", "application/json"]))
    def fuzz(data, accept):
        before = snapshot()
        response = client.open(url, method=method, data=MultiDict(data), headers={"Accept": accept})
        _check(response, before, f"{method} {url} {data!r}")
        if ENDPOINTS[rule.endpoint].kind != PUBLIC and response.status_code == 302 \
                and "/auth/login" in (response.location or ""):
            login_as(client, "alice")

    fuzz()


@pytest.mark.parametrize("rule", POST_RULES, ids=_rule_id)
def test_fuzzed_json_bodies_never_fail_or_half_save(app, client, world, rule):
    """No route takes JSON, but Flask-WTF reads a JSON body as form data: whatever the body,
    with a valid CSRF header, a clear 4xx or a form error, never a 500."""
    _as_visitor(client, rule)
    url = _url(world, rule)
    names = _form_field_names(client, url, rule)
    token = _token(client, url, rule)
    method = sorted(rule.methods & STATE_CHANGING)[0]

    @settings(FUZZ, max_examples=12)
    @given(body=json_body([n for n in names if n != "csrf_token"]))
    def fuzz(body):
        before = snapshot()
        response = client.open(url, method=method, json=body,
                               headers={"X-CSRFToken": token, "Accept": "application/json"})
        _check(response, before, f"{method} {url} json={body!r}")

    fuzz()


QUERY_KEYS = st.sampled_from(["page", "since", "size", "next", "token", "q"]) | WEIRD_TEXT
QUERY_VALUES = st.one_of(WEIRD_TEXT, HUGE, st.integers().map(str),
                         st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10",
                                          "99999999999999999999999", "1_000"]),
                         st.floats().map(str))


def _path_values(rule):
    args = {}
    for name in rule.arguments:
        converter = type(rule._converters[name]).__name__
        args[name] = (st.integers(min_value=0, max_value=2**80) if converter == "IntegerConverter"
                      else st.one_of(WEIRD_TEXT.filter(bool), HUGE))
    return st.fixed_dictionaries({n: st.one_of(st.none(), s) for n, s in args.items()})


@pytest.mark.parametrize("rule", GET_RULES, ids=_rule_id)
def test_fuzzed_pages_and_json_routes_never_fail(app, client, world, rule):
    """Weird path segments and query strings on every GET route, HTML and JSON."""
    _as_visitor(client, rule)

    @settings(FUZZ, max_examples=15)
    @given(path=_path_values(rule),
           query=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4),
           accept=st.sampled_from(["text/html", "application/json"]))
    def fuzz(path, query, accept):
        url = _url(world, rule, **{k: v for k, v in path.items() if v is not None})
        response = client.get(url, query_string=query, headers={"Accept": accept})
        assert response.status_code < 500, f"GET {url} {query!r}: {response.status_code}"
        if response.mimetype == "application/json":
            response.get_json()  # parses

    before = snapshot()
    fuzz()
    if rule.endpoint not in ("main.messages", "main.notifications", "main.task_status"):
        # Reading the inbox marks it read; polling reconciles tasks: the rest is read-only.
        assert snapshot() == before, f"fuzzing GET {rule.rule} changed data"


def test_an_email_that_grows_past_its_column_when_lowercased_is_refused(client, app):
    """'İ' lowercases to two characters: 89 characters typed, 169 stored, in VARCHAR(120)."""
    from app import db
    from app.models import User

    email = "a@" + ".".join(["\u0130" * 20] * 4) + ".com"
    token = csrf_token(client, "/auth/register")
    response = client.post("/auth/register", data={
        "username": "grows", "email": email, "password": "correct horse battery",
        "password2": "correct horse battery", "csrf_token": token})
    assert response.status_code == 200
    assert "Field cannot be longer than 120 characters." in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


# --------------------------------------------------------------------------- what it found

NUL_REFUSED = "contains a NUL character (U+0000), which cannot be stored"


def test_a_nul_character_is_refused_with_a_clear_message_and_nothing_saved(logged_in, app):
    """PostgreSQL refuses NUL in text: without this check a post with one was a 500 there."""
    from app import db
    from app.models import Post

    token = csrf_token(logged_in, "/index")
    response = logged_in.post("/index", data={"post": "hello\x00world", "csrf_token": token})
    assert response.status_code == 400
    assert NUL_REFUSED in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(Post.id))) == 0
    for url in ("/user/a%00b", "/explore?page=%00", "/tasks/%00"):
        response = logged_in.get(url, headers={"Accept": "application/json"})
        assert response.status_code == 400, url
        assert NUL_REFUSED in response.get_json()["message"]


@pytest.mark.parametrize("body", [True, 7, "post", ["post"], {"post": {"a": 1}}, {"post": 5}])
def test_a_json_body_that_is_not_form_fields_is_refused(logged_in, app, body):
    """Flask-WTF reads a JSON body as form data: `true` or {"post": 5} crashed the form."""
    from app import db
    from app.models import Post

    token = csrf_token(logged_in, "/index")
    response = logged_in.post("/index", json=body, headers={
        "X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 400
    assert "a JSON body must be an object whose values are text" in \
        response.get_json()["message"]
    assert db.session.scalar(sa.select(sa.func.count(Post.id))) == 0


def test_a_json_body_of_form_fields_still_works(logged_in, app):
    from app import db
    from app.models import Post

    token = csrf_token(logged_in, "/index")
    response = logged_in.post("/index", json={"post": "from a script"},
                              headers={"X-CSRFToken": token})
    assert response.status_code == 302
    assert db.session.scalar(sa.select(Post.body)) == "from a script"


@pytest.mark.parametrize("url", ["/index", "/explore", "/messages", "/user/susan"])
def test_a_page_number_past_any_feed_is_not_found(logged_in, url):
    """A page of 10**20 overflowed the OFFSET: a 500 on every database."""
    assert logged_in.get(f"{url}?page={10**20}").status_code == 404


@pytest.mark.parametrize("page", [10**20, 10**10, 0, -3])
def test_a_page_number_past_any_task_list_is_not_found(logged_in, user, page):
    """The operators' task list read ?page= unchecked: PostgreSQL's bigint OFFSET overflowed."""
    from app import db

    user.admin = True
    db.session.commit()
    assert logged_in.get("/admin/jobs?page=2").status_code == 200
    assert logged_in.get(f"/admin/jobs?page={page}").status_code == 404


@pytest.mark.parametrize("since", ["nan", "inf", "-inf", "1e400"])
def test_notifications_since_a_non_finite_number_returns_everything(logged_in, user, since):
    """MariaDB's driver refuses to send nan or inf (a 500 there): they count as 0."""
    from app import db

    user.add_notification("unread_message_count", 1)
    db.session.commit()
    response = logged_in.get(f"/notifications?since={since}")
    assert response.status_code == 200
    assert [n["data"] for n in response.get_json()] == [1]
