"""The import's pages (/imports) as a member sees them: an archive uploaded, its preview, Import,
the progress and the summary, the CSV report; the refusals (no file, an empty one, a file that
is not an archive, one too large for an import, one while another archive is being read, too
many uploads); cancel and discard; and the rules: another member's import is a 404 on every
route, like one that never existed. Jobs run in this process with RQ's own worker
(run_jobs_in_process); the real worker and browser are in test_import_browser.py."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from markupsafe import escape

from app import db
from app.imports import centre
from app.models import Import, ImportProblem, Post, Task, TaskStatus, utcnow
from tests.conftest import CSRF, csrf_token, login, run_jobs_in_process
from tests.endpoints import fast_user, forget_request_globals, snapshot

BODIES = ["first post", 'second, with "quotes"', "third\nwith two lines"]


@pytest.fixture
def susan(app):
    return fast_user("susan")  # a cheap password hash: these tests log in often


def bulk_queue(app):
    """Where exports and imports wait (app/jobs/types.py)."""
    return app.job_queues[app.config["BULK_QUEUE"]]


def posts_json(bodies: list[str] = BODIES, user: str = "susan") -> bytes:
    """posts.json as our export writes it (app/exports/formats.write_json)."""
    return json.dumps({
        "format": "microblog-posts", "version": 1, "user": user,
        "exported_at": "2025-01-02T00:00:00Z",
        "posts": [{"id": i + 1, "body": body, "timestamp": f"2024-05-0{i + 1}T10:00:00Z",
                   "language": "en"} for i, body in enumerate(bodies)]}).encode()


def _token(client) -> str:
    return csrf_token(client, "/imports")


def _upload(client, content: bytes | None, filename: str = "posts.json", **kwargs):
    data = {"csrf_token": _token(client)}
    if content is not None:
        data["file"] = (io.BytesIO(content), filename)
    return client.post("/imports", data=data, content_type="multipart/form-data", **kwargs)


def _post(client, url: str, **kwargs):
    return client.post(url, data={"csrf_token": _token(client)}, **kwargs)


def _imports() -> list[Import]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Import).order_by(Import.created_at)))


def _bodies(user) -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(
        sa.select(Post.body).where(Post.user_id == user.id).order_by(Post.timestamp)))


def _flash(response) -> str:
    html = response.get_data(as_text=True)
    return " ".join(re.sub(r"\s+", " ", m) for m in re.findall(
        r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', html, re.S))


def _state(html: str) -> str:
    """The import's page, its state section, whitespace squeezed."""
    section = html.split('id="import-state"')[1].split("</section>")[0]
    return re.sub(r"\s+", " ", section)


def _page(client, imp: Import) -> str:
    return _state(client.get(f"/imports/{imp.id}").get_data(as_text=True))


def _stored_files(app) -> list[str]:
    from pathlib import Path

    root = Path(app.config["EXPORT_FOLDER"]) / "imports"
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _routes(import_id: str) -> list[tuple[str, str]]:
    base = f"/imports/{import_id}"
    return [("GET", base), ("POST", f"{base}/confirm"), ("POST", f"{base}/cancel"),
            ("GET", f"{base}/report")]


# --------------------------------------------------------------------------- the way through

def test_upload_preview_import_and_report(app, client, susan):
    login(client)
    page = client.get("/imports").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and 'type="file" name="file"' in page
    assert 'href="/imports"' in client.get("/index").get_data(as_text=True)  # the nav link

    response = _upload(client, posts_json(), follow_redirects=True)
    (imp,) = _imports()
    assert response.request.path == f"/imports/{imp.id}"
    assert "Your archive was uploaded and is being read." in _flash(response)
    assert imp.status == Import.PREVIEWING and imp.filename == "posts.json"
    assert [job.id for job in bulk_queue(app).jobs] == [imp.task_id]
    state = _state(response.get_data(as_text=True))
    assert "Waiting to start" in state and 'role="progressbar"' in state
    assert "Nothing is imported until you have seen what it holds" in state
    assert _bodies(susan) == []

    run_jobs_in_process(app)  # the preview
    (imp,) = _imports()
    assert imp.status == Import.READY, imp.task.error
    state = _page(client, imp)
    assert "Preview ready" in state
    assert re.search(r'id="preview-posts">3<', state), state
    assert re.search(r'id="preview-already">0<', state), state
    for body in BODIES:
        assert re.sub(r"\s+", " ", str(escape(body))) in state, (body, state)
    assert f'action="/imports/{imp.id}/confirm"' in state
    assert _bodies(susan) == []  # the preview wrote nothing

    response = _post(client, f"/imports/{imp.id}/confirm", follow_redirects=True)
    assert "Your import has started" in _flash(response)
    (imp,) = _imports()
    assert imp.status == Import.IMPORTING
    state = _state(response.get_data(as_text=True))
    assert "Importing your posts" in state and 'role="progressbar"' in state
    assert f'action="/imports/{imp.id}/cancel"' in state
    assert f'action="/imports/{imp.id}/confirm"' not in state

    run_jobs_in_process(app)  # the import
    (imp,) = _imports()
    assert imp.status == Import.FINISHED, imp.task.error
    state = _page(client, imp)
    assert "The import is done." in state
    assert re.search(r'id="summary-imported">3<', state), state
    assert re.search(r'id="summary-failed">0<', state), state
    assert f'href="/imports/{imp.id}/report"' in state
    assert _bodies(susan) == BODIES
    assert _stored_files(app) == []  # a finished import's archive is deleted at once

    report = client.get(f"/imports/{imp.id}/report")
    assert report.status_code == 200
    assert report.headers["Content-Type"].startswith("text/csv")
    assert report.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(report.get_data().decode("utf-8-sig"))))
    assert rows[0] == ["outcome", "reason", "count", "item", "original_id"]
    assert ["imported", "", "3", "", ""] in rows

    # The same archive again: the preview says every post is already here.
    _upload(client, posts_json())
    run_jobs_in_process(app)
    newer = _imports()[-1]
    assert re.search(r'id="preview-already">3<', _page(client, newer))
    # The history, newest first.
    html = client.get("/imports").get_data(as_text=True)
    assert html.index(f'id="import-{newer.id}"') < html.index(f'id="import-{imp.id}"')
    assert "Preview ready" in html and "Imported" in html


def test_actions_answer_json_when_asked(app, client, susan):
    login(client)
    headers = {"Accept": "application/json"}
    response = _upload(client, posts_json(), headers=headers)
    assert response.status_code == 200
    body = response.get_json()["import"]
    assert body["status"] == "previewing" and body["filename"] == "posts.json"
    refused = _upload(client, posts_json(), headers=headers)
    assert refused.status_code == 409
    assert "Another archive is being read" in refused.get_json()["message"]
    assert [i["id"] for i in client.get("/imports", headers=headers).get_json()] == [body["id"]]

    run_jobs_in_process(app)
    shown = client.get(f"/imports/{body['id']}", headers=headers).get_json()
    assert shown["status"] == "ready" and shown["preview"]["posts"] == 3
    started = _post(client, f"/imports/{body['id']}/confirm", headers=headers)
    assert started.status_code == 200 and started.get_json()["import"]["status"] == "importing"
    again = _post(client, f"/imports/{body['id']}/confirm", headers=headers)
    assert again.status_code == 409 and again.get_json()["message"]


# --------------------------------------------------------------------------- refusals

def test_no_file_or_an_empty_one_is_refused_with_a_clear_message_and_nothing_stored(
        app, client, susan):
    login(client)
    before = snapshot()
    response = _upload(client, None, follow_redirects=True)
    assert "Choose a file to import." in _flash(response)
    response = _upload(client, b"", filename="empty.json", follow_redirects=True)
    assert "The file is empty." in _flash(response)
    assert snapshot() == before
    assert _stored_files(app) == [] and bulk_queue(app).count == 0


def test_a_file_that_is_not_an_archive_fails_its_preview_saying_what_it_is(app, client, susan):
    login(client)
    _upload(client, b"Dear diary, today I moved to a new site.\n", filename="posts.json")
    run_jobs_in_process(app)
    (imp,) = _imports()
    assert imp.status == TaskStatus.FAILED
    state = _page(client, imp)
    assert "This archive could not be read." in state
    reason = re.search(r'<span class="import-error">(.*?)</span>', state).group(1)
    # What the file looked like, and what is accepted, whole.
    assert "This file looks like plain text, not an archive." in reason, reason
    assert "Mastodon" in reason and reason.endswith("."), reason
    assert "confirm" not in state and "Nothing was imported." in state
    assert _bodies(susan) == [] and _stored_files(app) == []
    shown = client.get(f"/imports/{imp.id}", headers={"Accept": "application/json"}).get_json()
    assert shown["status"] == "failed" and shown["error"] == reason


def test_a_second_upload_while_an_archive_is_read_is_refused_and_stores_nothing(
        app, client, susan):
    login(client)
    _upload(client, posts_json())
    files = _stored_files(app)
    response = _upload(client, posts_json(["other"]), follow_redirects=True)
    assert "Another archive is being read" in _flash(response)
    assert len(_imports()) == 1 and _stored_files(app) == files


def test_the_time_limit_of_each_step_grows_with_the_archive(app, client, susan):
    """An operator's bound on a stuck job: ten minutes, plus a second per 50 KB."""
    login(client)
    _upload(client, posts_json(["x" * 200_000]))
    [imp] = _imports()
    preview_job = imp.task.get_rq_job()
    assert preview_job.timeout == 600 + imp.size // 50_000 > 600
    run_jobs_in_process(app)
    _post(client, f"/imports/{imp.id}/confirm")
    [imp] = _imports()
    assert imp.task.get_rq_job().timeout == preview_job.timeout


def test_a_second_import_while_one_runs_is_refused(app, client, susan):
    login(client)
    _upload(client, posts_json(["one"]))
    run_jobs_in_process(app)
    _upload(client, posts_json(["two"]))
    run_jobs_in_process(app)
    first, second = _imports()
    _post(client, f"/imports/{first.id}/confirm")
    response = _post(client, f"/imports/{second.id}/confirm", follow_redirects=True)
    assert "Another import is in progress" in _flash(response)
    first, second = _imports()
    assert first.status == Import.IMPORTING and second.status == Import.READY


@pytest.mark.parametrize("config_overrides",
                         [{"RATELIMIT_ENABLED": True, "RATELIMIT_IMPORT": "1 per minute"}])
def test_uploads_are_rate_limited(app, client, susan, config_overrides):
    login(client)
    assert _upload(client, posts_json()).status_code == 302
    response = _upload(client, posts_json(["other"]))
    assert response.status_code == 429
    assert "too many requests" in response.get_data(as_text=True).lower()
    assert len(_imports()) == 1


@pytest.mark.timeout(300)
def test_an_upload_larger_than_the_limit_gets_a_page_that_says_so_before_it_is_sent(app):
    """A real server: a body that says it is too large is refused before it is read, and a
    chunked one (no length said) as soon as reading it passes the limit; either way with a
    page that says the limit, and nothing stored."""
    from tests.web_server import gunicorn, repeated, send_body

    fast_user("susan")
    limit = 2 * 1024 * 1024
    with gunicorn(IMPORT_MAX_BYTES=limit) as server:
        session = server.log_in("susan")
        match = CSRF.search(session.get(f"{server.base}/imports", timeout=30).text)
        cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        boundary = "import-boundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
                f"{match.group(1) or match.group(2)}\r\n--{boundary}\r\nContent-Disposition: "
                f"form-data; name=\"file\"; filename=\"big.zip\"\r\n"
                "Content-Type: application/zip\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = 2 * limit
        for chunked in (False, True):
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                       "Accept": "text/html", "Cookie": cookie}
            if not chunked:
                headers["Content-Length"] = str(len(head) + size + len(tail))
            status, text = send_body(server.port, "/imports", headers,
                                     iter([head, *repeated(b"z", size), tail]), chunked)
            assert status == 413, (chunked, text[:500])
            text = re.sub(r"\s+", " ", text)
            assert "The file is larger than 2 MiB, the most an import accepts." in text, (
                chunked, text[:2000])
    db.session.remove()
    assert _imports() == [] and _stored_files(app) == []


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_the_413_says_the_limit_an_import_has(app, client, susan, accept):
    """The default limit, in words, for a body that says it is larger (refused unread)."""
    login(client)
    too_large = app.config["IMPORT_MAX_BYTES"] + 1
    response = client.post("/imports", data=b"--x--", headers={"Accept": accept},
                           content_type="multipart/form-data; boundary=x",
                           environ_overrides={"CONTENT_LENGTH": str(too_large)})
    assert response.status_code == 413
    message = "The file is larger than 100 MiB, the most an import accepts."
    if accept == "application/json":
        assert response.get_json()["message"] == message
    else:
        assert message in response.get_data(as_text=True)
    # Every other page keeps the general limit and its words.
    response = client.post("/index", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1),
                           content_type="application/octet-stream")
    assert response.status_code == 413
    assert "What you sent is too large for this page" in response.get_data(as_text=True)
    assert _imports() == []


# --------------------------------------------------------------------------- cancel, discard

def test_cancel_while_the_archive_is_read_then_discard_a_preview(app, client, susan):
    login(client)
    _upload(client, posts_json())
    (imp,) = _imports()
    response = _post(client, f"/imports/{imp.id}/cancel", follow_redirects=True)
    assert "The import was cancelled. Nothing was imported." in _flash(response)
    (imp,) = _imports()
    assert imp.status == TaskStatus.CANCELLED and _stored_files(app) == []
    assert "Nothing was imported." in _state(response.get_data(as_text=True))
    run_jobs_in_process(app)  # the cancelled job never runs
    assert _imports()[0].status == TaskStatus.CANCELLED

    _upload(client, posts_json())
    run_jobs_in_process(app)
    imp = _imports()[-1]
    assert imp.status == Import.READY
    response = _post(client, f"/imports/{imp.id}/cancel", follow_redirects=True)
    assert "Nothing was imported." in _flash(response)
    imp = _imports()[-1]
    assert imp.status == TaskStatus.CANCELLED and _stored_files(app) == []
    response = _post(client, f"/imports/{imp.id}/confirm", follow_redirects=True)
    assert "This import cannot be started" in _flash(response)
    assert _bodies(susan) == []


def test_cancelling_a_running_import_keeps_what_it_imported_and_says_how_many(
        app, client, susan):
    imp = _import_in(susan, TaskStatus.RUNNING, imported=5, position=5,
                     storage_key="imports/x/archive")
    login(client)
    response = _post(client, f"/imports/{imp.id}/cancel", follow_redirects=True)
    assert "The posts imported before it stopped stay on your account." in _flash(response)
    state = _state(response.get_data(as_text=True))
    assert "The import was cancelled." in state and "Cancelled by you." in state
    assert "5 posts were imported before it stopped; they stay on your account." in state
    db.session.expire_all()
    assert imp.task.status == TaskStatus.CANCELLED and imp.storage_key is None
    response = _post(client, f"/imports/{imp.id}/cancel", follow_redirects=True)
    assert "This import has already ended; there is nothing to cancel." in _flash(response)


# --------------------------------------------------------------------------- who may

def test_another_members_import_is_a_404_on_every_route(app, client, susan):
    login(client)
    _upload(client, posts_json())
    run_jobs_in_process(app)
    (imp,) = _imports()
    client.post("/auth/logout", data={"csrf_token": _token(client)})
    forget_request_globals()
    fast_user("mallory")
    login(client, "mallory")
    token = _token(client)
    before = snapshot()
    for import_id in (imp.id, "no-such-import-000000000"):
        for method, url in _routes(import_id):
            for accept in ("text/html", "application/json"):
                response = client.open(url, method=method, data={"csrf_token": token},
                                       headers={"Accept": accept})
                assert response.status_code == 404, f"{method} {url}: {response.status_code}"
                assert "posts.json" not in response.get_data(as_text=True)
    assert snapshot() == before
    assert imp.id not in client.get("/imports").get_data(as_text=True)
    assert _imports()[0].status == Import.READY


# --------------------------------------------------------------------------- what pages show

def _import_in(user, status: str, stage: str = Import.IMPORT, label: str = "", **fields):
    task = Task(id=f"task-{label or status}-{stage}", user_id=user.id, status=status,
                name=centre.TASK_IMPORT if stage == Import.IMPORT else centre.TASK_PREVIEW,
                description="Importing posts...", progress=40,
                complete=status not in TaskStatus.ACTIVE,
                active_name=None if status not in TaskStatus.ACTIVE else (
                    centre.TASK_IMPORT if stage == Import.IMPORT else centre.TASK_PREVIEW),
                error="Disk full." if status == TaskStatus.FAILED else None)
    imp = Import(user_id=user.id, stage=stage, kind="mastodon", filename=f"{label or status}.zip",
                 size=2048, task=task, **fields)
    db.session.add_all([task, imp])
    db.session.commit()
    return imp


def test_every_state_is_shown_with_its_actions_and_no_inline_code(app, client, susan):
    from tests.test_security_headers import assert_no_inline_code

    preview = json.dumps({
        "kind": "mastodon", "account": "susan@social.example", "posts": 1200, "already": 7,
        "first": "2019-03-01T08:00:00Z", "last": "2024-12-31T23:59:59Z",
        "skipped": {"boost": 31, "reply": 4}, "broken": 2, "follows": 12,
        "samples": [{"body": "a sample post", "timestamp": "2020-01-01T00:00:00Z"}],
        "warnings": ["This is an archive of @someone, not of you (@susan)."]})
    imports = {
        "previewing": _import_in(susan, TaskStatus.RUNNING, Import.PREVIEW),
        "ready": _import_in(susan, TaskStatus.FINISHED, Import.PREVIEW, "ready",
                            preview_json=preview, confirm_by=utcnow() + timedelta(minutes=30)),
        "unreadable": _import_in(susan, TaskStatus.FAILED, Import.PREVIEW, "unreadable"),
        "cancelled": _import_in(susan, TaskStatus.CANCELLED, label="cancelled", imported=1250,
                                preview_json=preview, skipped_json='{"duplicate": 3}'),
        "finished": _import_in(susan, TaskStatus.FINISHED, label="finished", imported=1193,
                               failed=2, followed=10, preview_json=preview,
                               skipped_json='{"boost": 31, "duplicate": 7}',
                               finished_at=utcnow()),
        "expired": _import_in(susan, TaskStatus.FINISHED, Import.PREVIEW, "expired",
                              preview_json=preview, expired_at=utcnow()),
        # Past its time, before the scheduled job has deleted its file.
        "late": _import_in(susan, TaskStatus.FINISHED, Import.PREVIEW, "late",
                           preview_json=preview, confirm_by=utcnow() - timedelta(minutes=1)),
    }
    db.session.add(ImportProblem(import_id=imports["finished"].id, outcome="not_found", item=3,
                                 original_id="@nobody@elsewhere.example",
                                 reason="no account of that name here"))
    db.session.commit()
    login(client)
    listing = client.get("/imports").get_data(as_text=True)
    assert_no_inline_code("/imports", listing)
    cancel, confirm, report = '/cancel"', '/confirm"', '/report"'
    expected = {
        "previewing": ["Reading the archive", 'aria-valuenow="40"', cancel],
        "ready": ["Preview ready", "This is an archive of @someone, not of you (@susan).",
                  "@susan@social.example", "1,200", "Boosts and retweets", "a sample post",
                  "<time", confirm, cancel],
        "unreadable": ["This archive could not be read.", "Disk full.", "Nothing was imported."],
        "cancelled": ["The import was cancelled.",
                      "1,250 posts were imported before it stopped; they stay on your account.",
                      "Already on your account", report],
        "finished": ["The import is done.", "1,193", "Accounts not found here", report],
        "expired": ["was not imported in time"],
        "late": ["was not imported in time"],
    }
    absent = {"previewing": [confirm, report], "ready": [report],
              "unreadable": [confirm, cancel, report], "cancelled": [confirm, cancel],
              "finished": [confirm, cancel], "expired": [confirm, cancel, report],
              "late": [confirm, cancel, report]}
    for name, imp in imports.items():
        assert f'id="import-{imp.id}"' in listing
        html = client.get(f"/imports/{imp.id}").get_data(as_text=True)
        assert_no_inline_code(f"/imports/{imp.id}", html)
        state = _state(html)
        assert all(word in state for word in expected[name]), (name, state)
        assert not any(word in state for word in absent[name]), (name, state)
        sections = client.get(f"/imports/{imp.id}?sections=1").get_data(as_text=True)
        assert 'id="import-state"' in sections and "<nav" not in sections
    rows = list(csv.reader(io.StringIO(client.get(
        f"/imports/{imports['finished'].id}/report").get_data().decode("utf-8-sig"))))
    assert ["not_found", "", "1", "", ""] in rows
    assert ["not_found", "no account of that name here", "", "3",
            "@nobody@elsewhere.example"] not in rows  # a leading @ is a formula trigger
    assert ["not_found", "no account of that name here", "", "3",
            "'@nobody@elsewhere.example"] in rows


def test_the_report_neutralises_formula_cells_from_the_archive(app, client, susan):
    imp = _import_in(susan, TaskStatus.FINISHED, imported=0, failed=2, finished_at=utcnow())
    for item, (original_id, reason) in enumerate([
            ("=HYPERLINK(\"http://evil.example\")", "+SUM(1,2)"),
            ("-2+3", "@cmd|' /C calc'!A0")], 1):
        db.session.add(ImportProblem(import_id=imp.id, outcome="failed", item=item,
                                     original_id=original_id, reason=reason))
    db.session.commit()
    login(client)
    response = client.get(f"/imports/{imp.id}/report")
    rows = list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    problems = [row for row in rows[1:] if row[3]]
    assert problems == [
        ["failed", "'+SUM(1,2)", "", "1", "'=HYPERLINK(\"http://evil.example\")"],
        ["failed", "'@cmd|' /C calc'!A0", "", "2", "'-2+3"]]
    assert ["failed", "", "2", "", ""] in rows


def test_a_preview_import_has_no_report_yet(app, client, susan):
    imp = _import_in(susan, TaskStatus.RUNNING, Import.PREVIEW)
    login(client)
    response = client.get(f"/imports/{imp.id}/report", follow_redirects=True)
    assert "There is no report yet" in _flash(response)
