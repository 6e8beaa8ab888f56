"""/api/imports as a program uses it: an archive uploaded (multipart) answers 202 with its
Location; the import polled with its ETag (304 while nothing changed) shows the preview when
it is ready; confirm (202), poll until finished, the summary and the CSV report. The page's
rules and reasons, as problem types: one archive read at a time, an empty file, a file too
large, no file, confirm before the preview is ready or after it expired, cancel after the end,
no report before the import; a read token cannot upload; another user's import is a 404.
Idempotency-Key on an upload: the same file again (another multipart boundary) is the first
answer; another file under the key is a 422. Jobs run in this process (run_jobs_in_process);
the program-style end-to-end run over HTTP is tests/test_api_end_to_end.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.models import Import, Post, utcnow
from tests.api_helpers import bearer, token_for
from tests.conftest import browser, run_jobs_in_process
from tests.endpoints import fast_user
from tests.endpoints import snapshot as rows_snapshot
from tests.test_import_pages import BODIES, posts_json

PROBLEM = "application/problem+json"


@pytest.fixture
def client(app):
    """Each request in an app context of its own, as in a real server: what one caller's
    request keeps in `g` (its token, its language) is not the next one's."""
    return browser(app)


def snapshot() -> dict:
    # A token's first use writes its last_used_at: not something the refused request saved.
    return rows_snapshot(frozenset({"user.last_seen", "api_token.last_used_at"}))


@pytest.fixture
def susan(app):
    return fast_user("susan")


@pytest.fixture
def auth(susan) -> dict[str, str]:
    return bearer(token_for(susan))


def multipart(content: bytes, filename: str = "posts.json", boundary: str = "b0undary",
              field: str = "file") -> tuple[bytes, str]:
    """A multipart body as a client library writes it, with the boundary it picked."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(client, headers: dict, content: bytes | None = None, **kwargs):
    body, content_type = multipart(posts_json() if content is None else content, **kwargs)
    return client.post("/api/imports", data=body, content_type=content_type, headers=headers)


def problem_type(response) -> str:
    assert response.mimetype == PROBLEM, (response.status_code, response.get_data(as_text=True))
    return response.get_json()["type"].removeprefix("/api/problems/")


def bodies_of(user) -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Post.body).where(Post.user_id == user.id)
                                   .order_by(Post.timestamp)))


def test_upload_preview_confirm_and_report(app, client, susan, auth):
    response = upload(client, auth)
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/api/imports/{body['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    assert body["status"] == "previewing" and body["preview"] is None
    assert body["links"]["confirm"] is None and body["links"]["cancel"]

    location = response.headers["Location"]
    first = client.get(location, headers=auth)
    assert first.status_code == 200 and first.headers["ETag"]
    unchanged = client.get(location, headers={**auth, "If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.get_data() == b""

    run_jobs_in_process(app)  # the preview
    ready = client.get(location, headers={**auth, "If-None-Match": first.headers["ETag"]})
    assert ready.status_code == 200 and ready.headers["ETag"] != first.headers["ETag"]
    imp = ready.get_json()
    assert imp["status"] == "ready" and imp["kind"] == "microblog-json"
    assert imp["preview"]["posts"] == len(BODIES) and imp["preview"]["already"] == 0
    assert [s["body"] for s in imp["preview"]["samples"]][:1] == [BODIES[0]]
    assert imp["confirm_by"] and imp["links"]["confirm"] == f"{location}/confirm"
    assert bodies_of(susan) == []  # a preview writes nothing

    confirmed = client.post(imp["links"]["confirm"], headers=auth)
    assert confirmed.status_code == 202 and confirmed.headers["Location"] == location
    assert confirmed.get_json()["status"] == "importing"
    run_jobs_in_process(app)  # the import
    done = client.get(location, headers=auth).get_json()
    assert done["status"] == "finished"
    assert done["summary"] == {"imported": 3, "failed": 0, "followed": 0, "not_found": 0,
                               "skipped": {}}
    assert sorted(bodies_of(susan)) == sorted(BODIES)

    report = client.get(done["links"]["report"], headers=auth)
    assert report.status_code == 200 and report.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(report.get_data(as_text=True).lstrip("\ufeff"))))
    assert ["imported", "", "3", "", ""] in rows

    history = client.get("/api/imports", headers=auth).get_json()
    assert [i["id"] for i in history] == [done["id"]]


def test_the_same_upload_with_the_same_key_is_answered_once(app, client, susan, auth):
    key = {**auth, "Idempotency-Key": "upload-1"}
    first = upload(client, key, boundary="first-boundary")
    again = upload(client, key, boundary="another-boundary")  # the same file, sent again
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(Import.id))) == 1

    before = snapshot()
    other = upload(client, key, content=posts_json(["another archive"]))
    assert other.status_code == 422 and problem_type(other) == "idempotency-key-reused"
    assert snapshot() == before


def test_one_archive_is_read_at_a_time(client, susan, auth):
    assert upload(client, auth).status_code == 202
    before = snapshot()
    second = upload(client, auth)
    assert second.status_code == 409 and problem_type(second) == "import-preview-in-progress"
    assert "Another archive is being read" in second.get_json()["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("content, field, status, kind", [
    (b"", "file", 422, "empty-file"),
    (b"{}", "archive", 422, "invalid-input"),  # no `file` field
])
def test_a_wrong_upload_says_why_and_keeps_nothing(client, susan, auth, content, field, status,
                                                   kind):
    before = snapshot()
    response = upload(client, auth, content=content, field=field)
    assert response.status_code == status and problem_type(response) == kind
    assert snapshot() == before


@pytest.mark.parametrize("config_overrides", [{"IMPORT_MAX_BYTES": 1000}])
def test_a_file_larger_than_an_import_takes_is_a_413_problem(client, susan, auth):
    before = snapshot()
    response = upload(client, auth, content=b"x" * 2000)
    assert response.status_code == 413 and problem_type(response) == "too-large"
    assert "the most an import accepts" in response.get_json()["detail"]
    assert snapshot() == before


def test_a_read_token_cannot_upload(client, susan):
    response = upload(client, bearer(token_for(susan, scope="read")))
    assert response.status_code == 403 and problem_type(response) == "insufficient-scope"


def test_confirm_and_report_before_the_preview_is_ready_are_refused(client, susan, auth):
    location = upload(client, auth).headers["Location"]
    confirm = client.post(f"{location}/confirm", headers=auth)
    assert confirm.status_code == 409 and problem_type(confirm) == "import-not-ready"
    report = client.get(f"{location}/report", headers=auth)
    assert report.status_code == 409 and problem_type(report) == "import-no-report"


def test_an_expired_preview_cannot_be_confirmed(app, client, susan, auth):
    location = upload(client, auth).headers["Location"]
    run_jobs_in_process(app)
    imp = db.session.get(Import, location.rsplit("/", 1)[1])
    imp.confirm_by = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert client.get(location, headers=auth).get_json()["status"] == "expired"
    response = client.post(f"{location}/confirm", headers=auth)
    assert response.status_code == 410 and problem_type(response) == "import-expired"


def test_a_preview_is_dropped_by_cancel_and_an_ended_one_cannot_be(app, client, susan, auth):
    location = upload(client, auth).headers["Location"]
    run_jobs_in_process(app)
    cancelled = client.post(f"{location}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = client.post(f"{location}/cancel", headers=auth)
    assert again.status_code == 409 and problem_type(again) == "import-ended"
    assert bodies_of(susan) == []


def test_another_users_import_is_a_404(app, client, susan, auth):
    location = upload(client, auth).headers["Location"]
    bob = bearer(token_for(fast_user("bob")))
    before = snapshot()
    for method, url in [("GET", location), ("POST", f"{location}/confirm"),
                        ("POST", f"{location}/cancel"), ("GET", f"{location}/report")]:
        response = client.open(url, method=method, headers=bob)
        assert response.status_code == 404 and problem_type(response) == "not-found"
    assert client.get("/api/imports", headers=bob).get_json() == []
    assert snapshot() == before


def test_refusals_are_in_the_readers_language(client, susan, auth):
    upload(client, auth)
    response = upload(client, {**auth, "Accept-Language": "es"})
    assert response.status_code == 409
    assert response.get_json()["detail"].startswith("Se está leyendo otro archivo.")


def test_the_history_is_paged_with_link_headers(app, client, susan, auth):
    for n in range(3):
        location = upload(client, auth, content=posts_json([f"post {n}"])).headers["Location"]
        client.post(f"{location}/cancel", headers=auth)  # so that the next one may be read
    first = client.get("/api/imports?limit=2", headers=auth)
    assert len(first.get_json()) == 2 and 'rel="next"' in first.headers["Link"]
    next_url = first.headers["Link"].split(">")[0].lstrip("<")
    rest = client.get(next_url, headers=auth)
    assert len(rest.get_json()) == 1 and "Link" not in rest.headers
    ids = [i["id"] for i in first.get_json() + rest.get_json()]
    assert len(set(ids)) == 3


def test_the_preview_is_the_pages_own(app, client, susan, auth):
    """The API shows what the page shows: the same preview, warnings translated."""
    archive = json.loads(posts_json())
    archive["user"] = "someone-else"
    location = upload(client, auth, content=json.dumps(archive).encode()).headers["Location"]
    run_jobs_in_process(app)
    preview = client.get(location, headers=auth).get_json()["preview"]
    assert preview["posts"] == len(BODIES)
