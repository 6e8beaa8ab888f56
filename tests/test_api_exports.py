"""/api/exports as a program uses it, jobs run in this process: 202 with Location and
Retry-After, the same rules and reasons as the export centre's page (one at a time, the
cooldown, an unknown format), Idempotency-Key, the ETag poll, progress with its counts and
estimate, the download with ranges, cancel, retry and delete."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_babel import refresh

from app import db
from app.models import Export, Notification, Task, TaskStatus
from tests.api_helpers import bearer, token_for
from tests.conftest import csrf_token, login, make_user, run_jobs_in_process

POSTS = [f"post number {n}" for n in range(5)]


@pytest.fixture
def susan(app):
    return make_user("susan", posts=POSTS)


@pytest.fixture
def headers(susan):
    return bearer(token_for(susan))


def _exports() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Export))


def _start(client, headers, fmt="json", **extra):
    return client.post("/api/exports", json={"format": fmt}, headers=headers | extra)


def test_starting_an_export_is_202_with_where_to_poll_and_when(client, headers):
    response = _start(client, headers, "csv")
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == body["links"]["self"] == f"/api/exports/{body['id']}"
    assert int(response.headers["Retry-After"]) > 0
    assert body["status"] == "queued" and body["format"] == "csv"
    assert body["links"]["download"] is None and body["links"]["cancel"]
    listed = client.get("/api/exports", headers=headers).get_json()
    assert [e["id"] for e in listed] == [body["id"]]


def test_a_second_export_while_one_runs_is_refused_with_the_pages_reason(client, susan,
                                                                          headers):
    _start(client, headers)
    refused = _start(client, headers, "csv")
    assert refused.status_code == 409
    problem = refused.get_json()
    assert problem["type"] == "/api/problems/export-in-progress"
    assert problem["detail"] == "An export task is currently in progress"
    assert _exports() == 1
    # The page gives the same reason for the same refusal.
    login(client)
    page = client.post("/exports", data={"format": "csv", "csrf_token": csrf_token(
        client, "/exports")}, headers={"Accept": "application/json"})
    assert page.status_code == 409 and page.get_json()["message"] == problem["detail"]


@pytest.mark.parametrize("config_overrides", [{"EXPORT_COOLDOWN": 600}])
def test_the_cooldown_is_a_429_saying_when_in_the_readers_language(app, client, headers):
    _start(client, headers)
    run_jobs_in_process(app)
    refresh()  # the test's app context outlives requests: forget the last one's locale
    refused = _start(client, headers, "csv", **{"Accept-Language": "es"})
    assert refused.status_code == 429
    assert refused.get_json()["type"] == "/api/problems/export-cooldown"
    assert refused.get_json()["detail"].startswith("Puede")
    assert 590 <= int(refused.headers["Retry-After"]) <= 600
    assert _exports() == 1


def test_an_unknown_format_is_a_422_and_saves_nothing(client, headers):
    refused = _start(client, headers, "pdf")
    assert refused.status_code == 422
    assert refused.get_json()["type"] == "/api/problems/unknown-format"
    assert _exports() == 0


def test_the_same_idempotency_key_starts_one_export(client, headers):
    key = {"Idempotency-Key": "nightly-2025-05-01"}
    first = _start(client, headers, "csv", **key)
    again = _start(client, headers, "csv", **key)
    assert first.status_code == again.status_code == 202
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = _start(client, headers, "json", **key)
    assert other.status_code == 422
    assert _exports() == 1


def test_polling_is_304_until_the_export_changes_then_the_file_downloads(app, client,
                                                                           headers):
    location = _start(client, headers, "csv").headers["Location"]
    first = client.get(location, headers=headers)
    etag = first.headers["ETag"]
    unchanged = client.get(location, headers=headers | {"If-None-Match": etag})
    assert unchanged.status_code == 304
    refused = client.get(f"{location}/download", headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["type"] == "/api/problems/export-not-ready"

    run_jobs_in_process(app)
    done = client.get(location, headers=headers | {"If-None-Match": etag})
    assert done.status_code == 200
    export = done.get_json()
    assert export["status"] == "finished" and export["progress"]["percent"] == 100
    assert export["posts_count"] == len(POSTS) and export["expires_at"].endswith("+00:00")
    file = client.get(export["links"]["download"], headers=headers)
    assert file.status_code == 200 and file.mimetype == "text/csv"
    text = file.get_data().decode("utf-8-sig")
    assert all(body in text for body in POSTS)
    assert int(file.headers["Content-Length"]) == export["size"]
    part = client.get(export["links"]["download"], headers=headers | {"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.get_data() == file.get_data()[:10]


def test_a_running_export_shows_its_counts_and_an_estimate(client, susan, headers):
    export_id = _start(client, headers).get_json()["id"]
    export = db.session.get(Export, export_id)
    task = export.task
    task.status, task.progress = TaskStatus.RUNNING, 40
    Notification.replace(susan.id, "task_progress",
                         task.to_dict() | {"done": 2, "total": 5, "unit": "posts", "eta": 3.5},
                         topic=task.id)
    db.session.commit()
    progress = client.get(f"/api/exports/{export_id}", headers=headers).get_json()["progress"]
    assert progress == {"percent": 40, "done": 2, "total": 5, "unit": "posts",
                        "eta_seconds": 3.5}


def test_cancel_retry_and_delete(app, client, headers):
    export_id = _start(client, headers).get_json()["id"]
    cancelled = client.post(f"/api/exports/{export_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert cancelled.get_json()["links"]["retry"]
    again = client.post(f"/api/exports/{export_id}/cancel", headers=headers)
    assert again.status_code == 409
    assert again.get_json()["type"] == "/api/problems/export-ended"

    retried = client.post(f"/api/exports/{export_id}/retry", headers=headers)
    assert retried.status_code == 202 and retried.get_json()["status"] == "queued"
    run_jobs_in_process(app)
    finished = client.get(f"/api/exports/{export_id}", headers=headers).get_json()
    assert finished["status"] == "finished"
    refused = client.post(f"/api/exports/{export_id}/retry", headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["type"] == "/api/problems/export-not-retryable"

    assert client.delete(f"/api/exports/{export_id}", headers=headers).status_code == 204
    assert client.get(f"/api/exports/{export_id}", headers=headers).status_code == 404
    assert _exports() == 0


@pytest.mark.parametrize("config_overrides", [{"RATELIMIT_ENABLED": True,
                                               "RATELIMIT_EXPORT": "1 per minute",
                                               "EXPORT_COOLDOWN": 0}])
def test_the_pages_export_limit_counts_api_starts_too(app, client, headers):
    assert _start(client, headers).status_code == 202
    run_jobs_in_process(app)
    refused = _start(client, headers, "csv")
    assert refused.status_code == 429
    assert refused.get_json()["type"] == "/api/problems/too-many-requests"
    assert int(refused.headers["Retry-After"]) > 0


def test_the_tasks_of_an_export_are_reachable_from_its_links(client, headers):
    body = _start(client, headers).get_json()
    task = client.get(body["links"]["task"], headers=headers)
    assert task.status_code == 200
    assert task.get_json()["name"] == "export_posts" and task.get_json()["status"] == "queued"
    assert db.session.get(Task, task.get_json()["id"]) is not None
