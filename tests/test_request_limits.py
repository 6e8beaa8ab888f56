"""Request bodies are bounded: a body past MAX_CONTENT_LENGTH (or a form field past
MAX_FORM_MEMORY_SIZE) is refused with 413 before it is read, whoever sends it, and a field past
its form's length is a form error, not a page echoing it back. Checked against a real gunicorn,
whose worker's memory is read from /proc, and through the test client."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import requests

from tests.conftest import CSRF, csrf_token, login, make_user
from tests.web_server import gunicorn, memory_kib, repeated, send_body

BODY = 50 * 1024 * 1024
# The worker's peak resident size may move a little for reasons of its own (a page rendered,
# a connection to Redis); the body is 50 MB. Far below one copy of it.
GROWTH_ALLOWED_KIB = 20 * 1024
KINDS = [("form", False), ("form", True), ("json", False), ("json", True)]


def _body(kind: str, fields: dict[str, str], big_field: str):
    """A form (or JSON object) whose `big_field` holds BODY bytes, produced as it is sent."""
    if kind == "form":
        prefix = (urlencode(fields) + f"&{big_field}=").encode()
        return "application/x-www-form-urlencoded", prefix, iter([b"a"])
    prefix = (json.dumps(fields)[:-1] + f', "{big_field}": "').encode()
    return "application/json", prefix, iter([b'"}'])


def _post_huge(server, path: str, kind: str, chunked: bool, fields: dict[str, str],
               big_field: str, cookie: str = "") -> tuple[int, str]:
    content_type, prefix, suffix = _body(kind, fields, big_field)
    tail = b"".join(suffix)

    def body():
        yield prefix
        yield from repeated(b"a", BODY)
        yield tail

    head = {"Content-Type": content_type, "Accept": "text/html"}
    if not chunked:
        head["Content-Length"] = str(len(prefix) + BODY + len(tail))
    if cookie:
        head["Cookie"] = cookie
    return send_body(server.port, path, head, body(), chunked)


def _assert_refused_without_growing(server, path, fields, big_field, cookie=""):
    (pid,) = server.worker_pids()
    for kind, chunked in KINDS:
        before = memory_kib(pid)
        status, text = _post_huge(server, path, kind, chunked, fields, big_field, cookie)
        grown = memory_kib(pid) - before
        label = f"{kind}, {'chunked' if chunked else 'Content-Length'}"
        assert status == 413, (label, status, text[text.find("<h1"):][:400])
        assert "too large" in text.lower(), (label, text[:500])
        assert grown < GROWTH_ALLOWED_KIB, f"{label}: the worker's peak grew by {grown} KiB"


@pytest.mark.timeout(300)
def test_a_huge_anonymous_login_post_is_refused_413_without_the_worker_growing(app):
    with gunicorn() as server:
        requests.get(f"{server.base}/auth/login", timeout=30)  # the worker has warmed up
        _assert_refused_without_growing(server, "/auth/login",
                                        {"username": "susan"}, "password")
        # A malformed chunked body is a 400 that says so, not a 500.
        status, text = send_body(server.port, "/auth/login", {
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
            iter([]), chunked=False, raw=b"zz\r\nhello\r\n0\r\n\r\n")
        assert status == 400 and "malformed" in text, (status, text[:300])
        # And the site still answers.
        assert requests.get(f"{server.base}/auth/login", timeout=30).status_code == 200


@pytest.mark.timeout(300)
def test_a_huge_post_from_a_logged_in_user_is_refused_413_and_not_stored(app):
    from app import db
    from app.models import Post

    make_user("susan")
    with gunicorn() as server:
        session = server.log_in("susan")
        match = CSRF.search(session.get(f"{server.base}/", timeout=30).text)
        cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        _assert_refused_without_growing(
            server, "/", {"csrf_token": match.group(1) or match.group(2)}, "post", cookie)
    db.session.remove()
    assert db.session.query(Post).count() == 0


# --------------------------------------------------------------------------- test client

def test_a_body_past_max_content_length_is_413_with_a_page_that_says_so(client):
    response = client.post("/auth/login", data={"username": "susan",
                                                "password": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    text = response.get_data(as_text=True)
    assert "too large" in text.lower()
    assert "x" * 1000 not in text


def test_a_json_client_gets_its_413_as_json(client):
    response = client.post("/auth/login", data="x" * (2 * 1024 * 1024),
                           headers={"Accept": "application/json",
                                    "Content-Type": "text/plain"})
    assert response.status_code == 413
    assert response.is_json
    assert "too large" in response.json["message"].lower()


def test_the_limit_is_a_setting(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 10 * 1024
    response = client.post("/auth/login", data={"username": "susan", "password": "x" * 20000})
    assert response.status_code == 413


def test_a_form_field_past_max_form_memory_size_is_413(app, client):
    # Below the whole body's limit, above the one for a single field: a multipart form.
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024
    response = client.post("/auth/login", content_type="multipart/form-data",
                           data={"username": "susan", "password": "x" * 5000})
    assert response.status_code == 413


def test_a_form_with_too_many_parts_is_413(client):
    data = {f"field{i}": "x" for i in range(2000)}
    response = client.post("/auth/login", content_type="multipart/form-data", data=data)
    assert response.status_code == 413


def test_a_post_longer_than_its_column_is_a_form_error_and_stores_nothing(app, client, user):
    from app import db
    from app.models import Post

    login(client)
    body = "y" * 50_000  # under the body limit, far over the post's 280 characters
    response = client.post("/index", data={"post": body, "csrf_token": csrf_token(client, "/")})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "between 1 and 280 characters" in text
    assert db.session.query(Post).count() == 0


@pytest.mark.parametrize("field, limit", [("username", 64), ("password", 128)])
def test_login_fields_longer_than_any_account_can_have_are_form_errors(client, user, field,
                                                                      limit):
    data = {"username": "susan", "password": "correct horse battery",
            "csrf_token": csrf_token(client, "/auth/login")}
    data[field] = "z" * (limit + 1)
    response = client.post("/auth/login", data=data)
    assert response.status_code == 200
    assert f"longer than {limit} characters" in response.get_data(as_text=True)


def test_the_import_route_can_take_a_larger_body_than_the_rest(app):
    """The decorator a future upload route uses: its own limit, the others' stays."""
    from app.security.body_limits import max_body_size

    app.config.update(MAX_CONTENT_LENGTH=1024, WTF_CSRF_ENABLED=False)

    @app.route("/__upload_probe", methods=["POST"])
    @max_body_size("UPLOAD_PROBE_MAX")
    def upload_probe():
        from flask import request

        return str(len(request.get_data()))

    app.config["UPLOAD_PROBE_MAX"] = 100 * 1024
    client = app.test_client()
    response = client.post("/__upload_probe", data=b"u" * 50_000,
                           content_type="application/octet-stream")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "50000")
    assert client.post("/__upload_probe", data=b"u" * 200_000,
                       content_type="application/octet-stream").status_code == 413
    assert client.post("/auth/login", data=b"u" * 5000,
                       content_type="application/octet-stream").status_code == 413
