"""A task that is no longer its export's current attempt must not touch the export.

The case outside testers found: a member cancels a CSV export and tries it again from
/exports; the new task finishes. The old, cancelled task is still listed for operators, and
retrying it (from /admin/jobs or `flask tasks retry`) deleted the finished file. Every action
on such a task, from every surface (the member's /exports, the admin pages, the CLI), either
is refused with the reason or ends only the old task itself; either way the good export keeps
its file, its row and its Download. Jobs run in real `rq worker` processes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq.job import Job
from rq.registry import CanceledJobRegistry

from app import db
from app.exports import delivery
from app.exports.actions import cancel_export, retry_export, start_export
from app.exports.storage import get_storage
from app.jobs import lifecycle
from app.models import Export, Post, Task, TaskStatus, utcnow
from tests.conftest import (
    browser,
    csrf_token,
    login,
    make_user,
    run_jobs_in_process,
    run_worker_burst,
)
from tests.endpoints import fast_user

POSTS = [f"post {i}, with a comma" for i in range(20)]


@dataclass
class Scene:
    member: object  # susan's browser
    admin: object  # boss's browser
    export_id: str
    old_task: str  # cancelled, then replaced by the retry
    new_task: str  # finished: the export's file
    content: bytes


def _export() -> Export:
    db.session.expire_all()
    (export,) = db.session.scalars(sa.select(Export)).all()
    return export


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def _post(client, url: str, **data):
    data["csrf_token"] = csrf_token(client, "/exports")
    return client.post(url, data=data, follow_redirects=True)


def _flashes(response) -> str:
    html = response.get_data(as_text=True)
    return " ".join(re.sub(r"\s+", " ", m) for m in re.findall(
        r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', html, re.S))


@pytest.fixture
def scene(app) -> Scene:
    susan = fast_user("susan")
    db.session.add_all([Post(body=body, author=susan) for body in POSTS])
    boss = fast_user("boss")
    boss.admin = True
    db.session.commit()
    member, admin = browser(app), browser(app)
    login(member, "susan")
    login(admin, "boss")

    assert "Your export has started" in _flashes(_post(member, "/exports", format="csv"))
    export = _export()
    old_task = export.task_id
    assert "cancelled" in _flashes(_post(member, f"/exports/{export.id}/cancel"))
    assert "tried again" in _flashes(_post(member, f"/exports/{export.id}/retry"))
    worker = run_worker_burst()
    assert worker.returncode == 0, worker.stderr
    export = _export()
    assert export.status == TaskStatus.FINISHED and export.task_id != old_task
    assert _task(old_task).status == TaskStatus.CANCELLED
    download = member.get(f"/exports/{export.id}/download")
    assert download.status_code == 200 and b"post 19, with a comma" in download.data
    return Scene(member, admin, export.id, old_task, export.task_id, download.data)


def assert_export_untouched(scene: Scene) -> None:
    """After whatever was tried, and after a worker ran whatever got queued: the export is
    still the finished one, with its file, its row's Download and the same content."""
    worker = run_worker_burst()
    assert worker.returncode == 0, worker.stderr
    export = _export()
    assert export.status == TaskStatus.FINISHED
    assert export.task_id in (scene.new_task, None)  # None: its task row was purged
    assert export.storage_key and get_storage().exists(export.storage_key)
    page = scene.member.get("/exports").get_data(as_text=True)
    row = page.split(f'id="export-{scene.export_id}"')[1].split("</tr>")[0]
    assert "Ready" in row and f"/exports/{scene.export_id}/download" in row
    download = scene.member.get(f"/exports/{scene.export_id}/download")
    assert download.status_code == 200 and download.data == scene.content
    old = _task(scene.old_task)
    assert old is None or old.complete  # never left "running"


# --------------------------------------------------------------------------- retry

def test_retry_of_the_replaced_task_is_not_offered_and_refused_on_the_admin_pages(
        app, scene):
    page = scene.admin.get(f"/admin/jobs/{scene.old_task}").get_data(as_text=True)
    assert f"/admin/jobs/{scene.old_task}/retry" not in page
    note = page.split('id="superseded"')[1].split("</p>")[0]
    assert "tried again" in note and f"/admin/jobs/{scene.new_task}" in note

    asked = scene.admin.get(f"/admin/jobs/{scene.old_task}/retry", follow_redirects=True)
    assert "no longer its export&#39;s current attempt" in _flashes(asked) or \
        "no longer its export's current attempt" in _flashes(asked)
    token = csrf_token(scene.admin, f"/admin/jobs/{scene.old_task}")
    done = scene.admin.post(f"/admin/jobs/{scene.old_task}/retry",
                            data={"csrf_token": token}, follow_redirects=True)
    message = _flashes(done)
    assert "Not done" in message and scene.new_task in message, message
    assert _task(scene.old_task).status == TaskStatus.CANCELLED
    assert app.task_queue.count == 0
    assert_export_untouched(scene)


def test_retry_of_the_replaced_task_is_refused_by_the_cli(app, runner, scene):
    result = runner.invoke(args=["tasks", "retry", scene.old_task[:8]])
    assert result.exit_code == 1
    assert "no longer its export's current attempt" in result.output
    assert scene.new_task in result.output
    assert _task(scene.old_task).status == TaskStatus.CANCELLED
    assert app.task_queue.count == 0
    assert_export_untouched(scene)


# --------------------------------------------------------------------------- cancel, stop

def test_cancel_and_stop_of_the_replaced_task_change_nothing_from_any_surface(
        app, runner, scene):
    for action in ("cancel", "stop"):
        asked = scene.admin.get(f"/admin/jobs/{scene.old_task}/{action}",
                                follow_redirects=True)
        assert "does not apply to a cancelled task" in _flashes(asked)
        token = csrf_token(scene.admin, f"/admin/jobs/{scene.old_task}")
        done = scene.admin.post(f"/admin/jobs/{scene.old_task}/{action}",
                                data={"csrf_token": token}, follow_redirects=True)
        assert "Not done" in _flashes(done) and "already ended" in _flashes(done)
    result = runner.invoke(args=["tasks", "cancel", scene.old_task])
    assert result.exit_code == 1 and "already ended" in result.output
    # The member's own buttons act on the export's current task only, which has finished.
    for action in ("cancel", "retry"):
        refused = _post(scene.member, f"/exports/{scene.export_id}/{action}")
        assert re.search("already ended|Only a failed or cancelled", _flashes(refused))
    assert _task(scene.old_task).status == TaskStatus.CANCELLED
    assert_export_untouched(scene)


def _requeue_as_the_old_code_did(app, task_id: str) -> None:
    """The state an earlier version's retry left: the replaced task queued again, its job
    back in the queue (RQ's own `rq requeue` does the same to the job)."""
    task = _task(task_id)
    lifecycle.reopen(task)
    job = Job.fetch(task_id, connection=app.redis)
    CanceledJobRegistry(job.origin, connection=app.redis).requeue(job)


def test_a_replaced_task_queued_by_other_means_is_cancelled_by_an_admin_harmlessly(
        app, runner, scene):
    _requeue_as_the_old_code_did(app, scene.old_task)
    result = runner.invoke(args=["tasks", "cancel", scene.old_task])
    assert result.exit_code == 0, result.output
    assert _task(scene.old_task).status == TaskStatus.CANCELLED
    assert_export_untouched(scene)


def test_a_replaced_task_that_reaches_a_worker_ends_without_touching_the_export(app, scene):
    _requeue_as_the_old_code_did(app, scene.old_task)
    assert_export_untouched(scene)  # runs the worker
    old = _task(scene.old_task)
    assert old.status == TaskStatus.CANCELLED and "newer attempt" in old.error


# --------------------------------------------------------------------------- delete, purge

def test_deleting_the_replaced_tasks_job_data_leaves_the_export(app, runner, scene):
    token = csrf_token(scene.admin, f"/admin/jobs/{scene.old_task}")
    done = scene.admin.post(f"/admin/jobs/{scene.old_task}/delete",
                            data={"csrf_token": token}, follow_redirects=True)
    assert "The job data was deleted." in _flashes(done)
    result = runner.invoke(args=["tasks", "retry", scene.old_task])
    assert result.exit_code == 1 and "no longer in Redis" in result.output
    assert_export_untouched(scene)


@pytest.mark.parametrize("surface", ["admin", "cli"])
def test_purging_the_old_and_the_current_task_keeps_the_export(app, runner, scene, surface):
    two_days_ago = utcnow() - timedelta(days=2)
    db.session.execute(sa.update(Task).values(finished_at=two_days_ago))
    db.session.commit()
    if surface == "cli":
        result = runner.invoke(args=["tasks", "purge", "--older-than", "1d"])
        assert result.exit_code == 0 and "2 task(s) purged." in result.output, result.output
    else:
        token = csrf_token(scene.admin, "/admin/purge?days=1")
        done = scene.admin.post("/admin/purge", data={"csrf_token": token, "days": "1"},
                                follow_redirects=True)
        assert "2 task(s) purged." in _flashes(done)
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 0
    assert_export_untouched(scene)


# --------------------------------------------------------------------------- a late attempt

def test_an_old_attempt_still_writing_when_the_export_is_retried_leaves_the_new_file(
        app, monkeypatch):
    """The member cancels a running export and tries it again; the new attempt finishes
    (a real worker) while the old one, between two checks for the cancel, is still writing.
    The old attempt's file must neither replace the new one nor be recorded, and its cleanup
    must remove only what it wrote itself."""
    user = make_user(posts=POSTS)
    export = start_export(user, "csv")
    old_task = export.task_id
    write_file = delivery.write_file

    def meanwhile_cancelled_and_retried(export, attempt, on_progress=None):
        assert attempt == old_task  # only the old attempt runs in this process
        cancel_export(db.session.get(Export, export.id))
        retry_export(db.session.get(Export, export.id))
        worker = run_worker_burst()  # the new attempt, to its end
        assert worker.returncode == 0, worker.stderr
        write_file(export, attempt)  # the old one finishes its file after all

    monkeypatch.setattr(delivery, "write_file", meanwhile_cancelled_and_retried)
    run_jobs_in_process(app)

    export = _export()
    assert export.status == TaskStatus.FINISHED and export.task_id != old_task
    assert _task(old_task).status == TaskStatus.CANCELLED
    storage = get_storage()
    assert old_task not in export.storage_key and storage.exists(export.storage_key)
    body = b"".join(storage.read(export.storage_key))
    assert b"post 19, with a comma" in body and len(body) == export.size
    files = [p for p in storage.path("").rglob("*") if p.is_file()]
    assert files == [storage.path(export.storage_key)]  # the old attempt's own file went
