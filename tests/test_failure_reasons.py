"""Why a task failed, in its reader's language. A reason is recorded in English (Task.error:
operators and the logs read it; the worker knows no user's language) and translated where a
user is shown it: the task alert of every page, the export centre's row and its JSON,
/notifications, /tasks/<id> and the /events stream (app/jobs/failures.py)."""

from __future__ import annotations

import errno
import smtplib
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from rq.timeouts import JobTimeoutException

import tests.test_browser as browser_tests
from app import db
from app.email import MailAlreadySending
from app.exports.actions import start_export
from app.exports.storage import StorageUnavailable
from app.jobs import lifecycle, operations, reconcile
from app.jobs.failures import WorkHorseKilled, describe_failure, reason_for_reader
from app.models import Task, TaskStatus
from tests.conftest import login, make_user, run_jobs_in_process
from tests.test_events import EventStream, logged_in_session
from tests.test_i18n import compiled_catalogs, translated_app  # noqa: F401  (fixtures)

# Translation is the same on every database: CI runs these once (SQLite).
pytestmark = pytest.mark.once
live_server = browser_tests.live_server

UNWRITABLE = {
    "en": "The server could not write the export file.",
    "es": "El servidor no ha podido escribir el archivo de exportación.",
    "ko": "서버가 내보내기 파일을 저장하지 못했습니다.",
}


@pytest.fixture
def config_overrides(tmp_path):
    """Exports go to a folder that cannot be made (beneath a regular file: refused even to
    root), so that an export fails for real; a live stream stays open to be read."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    return {"EXPORT_FOLDER": str(blocker / "exports"), "SERVER_NAME": None,
            "EVENTS_HEARTBEAT": 0.5, "EVENTS_MAX_AGE": 600}


def _failed_export(app, username: str = "ana") -> Task:
    """An export of a new user's posts, run by an RQ worker, that failed writing its file."""
    user = make_user(username, posts=["hello"])
    task_id = start_export(user, "json").task_id
    run_jobs_in_process(app)
    db.session.expire_all()
    task = db.session.get(Task, task_id)
    assert task.status == TaskStatus.FAILED and task.error == UNWRITABLE["en"], task.error
    return task


@pytest.mark.parametrize("language", ["es", "ko", "en"])
def test_a_failed_export_says_why_in_the_language_of_its_reader(app, client, language):
    task = _failed_export(app)
    login(client, "ana")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    reason = UNWRITABLE[language]

    assert reason in client.get("/user/ana").get_data(as_text=True)  # the task's alert
    [note] = [n["data"] for n in client.get("/notifications").get_json()
              if n["name"] == "task_progress"]
    assert note["status"] == "failed" and note["error"] == reason
    assert client.get(f"/tasks/{task.id}").get_json()["error"] == reason
    page = client.get("/exports").get_data(as_text=True)  # the export's row
    assert reason in page
    [export] = client.get("/exports", headers={"Accept": "application/json"}).get_json()
    assert export["status"] == "failed" and export["error"] == reason
    if language != "en":
        assert UNWRITABLE["en"] not in page
    db.session.expire_all()
    assert db.session.get(Task, task.id).error == UNWRITABLE["en"]  # still English for operators


def test_a_failure_pushed_live_reaches_the_stream_in_the_language_of_its_reader(
        app, live_server):
    user = make_user("ana")
    session = logged_in_session(live_server, "ana")
    session.headers["Accept-Language"] = "ko"
    stream = EventStream(session, f"{live_server}/events")
    try:
        stream.until(lambda event: event["data"]["name"] == "unread_message_count")
        task_id = start_export(user, "json").task_id
        run_jobs_in_process(app)  # its events are published as they are committed
        [*_, failed] = stream.until(lambda event: event["data"]["name"] == "task_progress"
                                    and event["data"]["data"]["status"] == "failed")
    finally:
        stream.close()
    assert failed["data"]["data"]["task_id"] == task_id
    assert failed["data"]["data"]["error"] == UNWRITABLE["ko"]


def test_a_reason_this_version_does_not_know_is_shown_as_it_was_recorded(app, client):
    user = make_user()
    login(client)
    task = user.launch_task("countdown", "Counting down...")
    lifecycle.end(task, TaskStatus.FAILED, error="The flux capacitor overheated.")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    [note] = [n["data"] for n in client.get("/notifications").get_json()
              if n["name"] == "task_progress"]
    assert note["error"] == "The flux capacitor overheated."
    assert client.get(f"/tasks/{task.id}").get_json()["error"] == (
        "The flux capacitor overheated.")


def _reason_of_a_lost_task(app, monkeypatch) -> str:
    """What reconcile records for a task whose job vanished from Redis."""
    task = make_user("lost").launch_task("export_posts", "Exporting posts...")
    app.redis.flushdb()
    monkeypatch.setattr(reconcile, "ENQUEUE_GRACE", timedelta(0))
    return reconcile.reconcile(task).error


@pytest.mark.parametrize("language", ["es", "ko"])
def test_every_reason_a_task_can_end_with_is_translated(app, monkeypatch, language):
    """Those describe_failure gives, those the lifecycle, reconcile and operators' actions
    record, and each of them as a retried failure's (+ RETRY_NOTE), parameters kept."""
    errors = [JobTimeoutException(), WorkHorseKilled(), MailAlreadySending(),
              redis.exceptions.ConnectionError(),
              sa.exc.OperationalError("SELECT 1", {}, Exception("server closed")),
              OSError(errno.ENOSPC, "No space left on device"),
              OSError(errno.EROFS, "Read-only file system"),
              smtplib.SMTPResponseException(550, b"mailbox unavailable"),
              ConnectionRefusedError(), StorageUnavailable("503"), KeyError("x"), None]
    reasons = [describe_failure(exc) for exc in errors] + [
        lifecycle.SUPERSEDED_REASON, operations.CANCELLED_REASON, operations.STOPPED_REASON,
        _reason_of_a_lost_task(app, monkeypatch)]
    with app.test_request_context(headers={"Accept-Language": language}):
        for reason in reasons:
            for recorded in (reason, reason + lifecycle.RETRY_NOTE):
                shown = reason_for_reader(recorded)
                assert shown != recorded and lifecycle.RETRY_NOTE.strip() not in shown, recorded
        refused = reason_for_reader(describe_failure(errors[7]) + lifecycle.RETRY_NOTE)
        failed = reason_for_reader(describe_failure(KeyError("x")))
    assert "550" in refused and "KeyError" in failed
