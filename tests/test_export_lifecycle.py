"""An export's life: delivered (the 60,000-post case: a link, not an attachment), cancelled
while queued or running, expired, kept (EXPORT_KEEP), held back (EXPORT_COOLDOWN), retried
and deleted. The worker-side behaviours run in real `rq worker` processes with a real SMTP
server; the centre's rules run their jobs in this process (RQ's SimpleWorker)."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from app import db, tasks
from app.email import outbox_dir
from app.exports import centre, delivery
from app.exports.actions import cancel_export, delete_export, retry_export, start_export
from app.exports.storage import get_storage
from app.models import Export, Post, Task, TaskStatus, utcnow
from tests.conftest import (
    login,
    make_user,
    run_jobs_in_process,
    run_worker_burst,
    start_worker,
    stop_process,
    wait_for,
    worker_env,
)

PUBLIC_BASE_URL = "https://microblog.example.org/site"


def add_posts(user, count: int) -> list[str]:
    """`count` posts for `user`, one second apart (oldest first), inserted in bulk."""
    start = utcnow() - timedelta(days=1)
    bodies = [f"post {i} <b>&</b> \"{i}\"" for i in range(count)]
    db.session.execute(sa.insert(Post), [
        {"body": body, "user_id": user.id, "timestamp": start + timedelta(seconds=i)}
        for i, body in enumerate(bodies)])
    db.session.commit()
    return bodies


def fresh(export: Export) -> Export:
    db.session.expire_all()
    return db.session.get(Export, export.id)


def files_in_storage(app) -> list[Path]:
    """Every file under the export folder, temporary ones included."""
    return [p for p in Path(app.config["EXPORT_FOLDER"]).rglob("*") if p.is_file()]


def outbox() -> list[Path]:
    return sorted(outbox_dir().glob("*.eml"))


def finished_export(user, fmt: str = "json") -> Export:
    """An export started and run to its end in this process."""
    export = start_export(user, fmt)
    run_jobs_in_process(current_app._get_current_object())
    export = fresh(export)
    assert export.status == TaskStatus.FINISHED, export.task.error
    return export


# --------------------------------------------------------------------------- real worker


@pytest.mark.timeout(600)
def test_60000_posts_arrive_as_a_link_to_the_download_page_and_the_file_has_them_all(
        app, smtp_server):
    user = make_user()
    bodies = add_posts(user, 60_000)
    export = start_export(user, "json")

    worker = run_worker_burst(env=worker_env(
        EXPORT_ATTACHMENT_LIMIT=1_000_000, PUBLIC_BASE_URL=PUBLIC_BASE_URL))
    assert worker.returncode == 0, worker.stderr

    export = fresh(export)
    assert export.status == TaskStatus.FINISHED and export.posts_count == 60_000
    [message] = smtp_server.handler_ref.messages
    assert message["Subject"] == "[Microblog] Your blog posts"
    assert message["To"] == "susan@example.com"
    assert list(message.iter_attachments()) == []
    download = f"{PUBLIC_BASE_URL}/exports/{export.id}/download"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "not attached" in text and "It is ready to download." in text
    assert {download, f"{PUBLIC_BASE_URL}/exports"} <= set(text.splitlines())
    assert f'href="{download}"' in html
    size = f"{export.size / 1e6:.1f} MB"  # human readable, as Jinja's filesizeformat writes it
    assert f"Your archive of posts is {size}" in text
    assert export.expires_at.strftime("%Y-%m-%d %H:%M") in text

    data = json.loads(b"".join(get_storage().read(export.storage_key)))
    assert [p["body"] for p in data["posts"]] == bodies
    assert export.task.result_message.startswith("Your posts were exported. Download them")


@pytest.mark.timeout(600)
def test_a_running_export_cancelled_stops_leaving_no_file_no_mail_and_the_task_cancelled(
        app, smtp_server):
    user = make_user()
    add_posts(user, 60_000)
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=5, TASK_PROGRESS_INTERVAL=0))
    try:
        export = start_export(user, "json")
        task_id = export.task_id

        def running_with_progress():
            task = db.session.get(Task, task_id)
            db.session.refresh(task)
            return task.status == TaskStatus.RUNNING and task.progress >= 1

        wait_for(running_with_progress, interval=0.02, message="the export to run")
        cancel_export(fresh(export))
        job = Job.fetch(task_id, connection=app.redis)
        wait_for(lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED,
                                              JobStatus.STOPPED),
                 interval=0.05, message="the job to end")
    finally:
        log = stop_process(worker)

    export = fresh(export)
    assert export.status == TaskStatus.CANCELLED, log
    assert export.task.progress < 100 and export.task.attempts == 1  # stopped, not retried
    # Ended cleanly: RQ counts it finished, not failed.
    assert job.get_status() == JobStatus.FINISHED, log
    assert task_id not in FailedJobRegistry(queue=app.task_queue).get_job_ids()
    assert files_in_storage(app) == []
    assert export.storage_key is None and export.size is None
    assert smtp_server.handler_ref.messages == []


# --------------------------------------------------------------------------- in process


def test_a_queued_export_cancelled_never_starts(app):
    user = make_user(posts=["hello"])
    export = start_export(user, "json")
    cancel_export(export)
    run_jobs_in_process(app)

    export = fresh(export)
    assert export.status == TaskStatus.CANCELLED
    assert export.task.started_at is None and export.task.attempts == 0
    assert Job.fetch(export.task_id, connection=app.redis).get_status() == JobStatus.CANCELED
    assert files_in_storage(app) == [] and outbox() == []


def test_cancel_of_a_finished_export_is_refused_with_a_reason(app):
    export = finished_export(make_user(posts=["hello"]))
    with pytest.raises(centre.ExportRefused, match="already ended"):
        cancel_export(export)
    assert fresh(export).status == TaskStatus.FINISHED


def test_cancelled_after_the_last_batch_sends_no_mail_and_removes_the_file(app, monkeypatch):
    """The flag is read once more right before the mail."""
    user = make_user(posts=["hello"])
    export = start_export(user, "json")
    write_file = delivery.write_file

    def write_then_get_cancelled(export, attempt, on_progress):
        write_file(export, attempt, on_progress)
        assert files_in_storage(app) != []
        cancel_export(export)  # the user clicks Cancel as the last batch is written

    monkeypatch.setattr(delivery, "write_file", write_then_get_cancelled)
    run_jobs_in_process(app)

    export = fresh(export)
    assert export.status == TaskStatus.CANCELLED
    assert files_in_storage(app) == [] and outbox() == []


def test_the_mail_of_a_small_json_export_attaches_it_and_links_to_its_page(app):
    user = make_user(posts=['<script>alert("x")</script>'])
    export = finished_export(user)
    [mail] = outbox()
    text = mail.read_text()
    assert 'filename="posts.json"' in text or "filename=posts.json" in text
    assert f"{app.config['PUBLIC_BASE_URL']}/exports/{export.id}/download" in text
    assert "<script>" not in text  # the body is in the attachment, base64; never raw


def test_expiry_deletes_the_file_and_shows_expired_and_keeps_the_row(app):
    user = make_user(posts=["hello"])
    export = finished_export(user)
    path = get_storage().path(export.storage_key)
    assert path.is_file()
    retention = timedelta(days=app.config["EXPORT_RETENTION_DAYS"])
    assert export.expires_at == export.finished_at + retention

    assert centre.expire_due(now=export.expires_at - timedelta(minutes=1)) == 0
    assert path.is_file()
    assert centre.expire_due(now=export.expires_at) == 1  # the scheduled job's work
    export = fresh(export)
    assert export.status == Export.EXPIRED and not path.exists()
    assert export.storage_key is None and export in centre.exports_of(user)
    assert tasks.expire_exports() == 0  # the scheduled job: nothing more is due


def test_the_scheduled_job_sweeps_temporary_files_a_killed_worker_left(app):
    folder = Path(app.config["EXPORT_FOLDER"]) / "7" / "abc"
    folder.mkdir(parents=True)
    stale, fresh_file = folder / "posts.csv.x1.part", folder / "posts.csv.x2.part"
    stale.write_bytes(b"half an export")
    fresh_file.write_bytes(b"an export being written")
    day_and_a_bit = time.time() - tasks.STALE_TEMP_FILE_AGE - 60
    os.utime(stale, (day_and_a_bit, day_and_a_bit))
    tasks.expire_exports()
    assert not stale.exists()
    assert fresh_file.exists()  # written to a moment ago: a running export's


@pytest.mark.parametrize("config_overrides", [{"EXPORT_KEEP": 3, "EXPORT_COOLDOWN": 0}])
def test_only_a_finished_export_beyond_export_keep_replaces_the_oldest(
        app, config_overrides, monkeypatch, client):
    user = make_user(posts=["hello"])
    kept = [finished_export(user) for _ in range(3)]

    def assert_downloadable(exports):
        for export in exports:
            export = fresh(export)
            assert export.status == TaskStatus.FINISHED, export
            assert get_storage().exists(export.storage_key)

    # A fourth that is cancelled, and one that fails, replace nothing.
    cancel_export(start_export(user, "json"))
    run_jobs_in_process(app)
    assert_downloadable(kept)
    monkeypatch.setattr(delivery, "write_file", _fail)
    failed = start_export(user, "csv")
    run_jobs_in_process(app)
    assert fresh(failed).status == TaskStatus.FAILED
    assert_downloadable(kept)
    monkeypatch.undo()

    # One that finishes replaces the oldest: its file goes, its row says why.
    oldest_file = get_storage().path(kept[0].storage_key)
    fourth = finished_export(user)
    assert_downloadable([*kept[1:], fourth])
    oldest = fresh(kept[0])
    assert oldest.status == Export.REPLACED and not oldest_file.exists()
    assert oldest.storage_key is None and oldest in centre.exports_of(user)

    login(client)
    page = client.get("/exports").get_data(as_text=True)
    row = page.split(f'id="export-{oldest.id}"')[1].split("</tr>")[0]
    assert "Replaced by a newer export" in row and "Expired" not in row
    assert "/download" not in row
    gone = client.get(f"/exports/{oldest.id}/download", follow_redirects=True)
    assert "replaced by a newer export" in gone.get_data(as_text=True)
    assert client.get(f"/exports/{oldest.id}/download",
                      headers={"Accept": "application/json"}).status_code == 410


@pytest.mark.parametrize("config_overrides", [{"EXPORT_COOLDOWN": 600}])
def test_cooldown_after_a_successful_export_only(app, config_overrides, monkeypatch):
    user = make_user(posts=["hello"])
    # A failed export does not count ...
    monkeypatch.setattr(delivery, "write_file", _fail)
    failed = start_export(user, "json")
    run_jobs_in_process(app)
    assert fresh(failed).status == TaskStatus.FAILED
    # ... nor a cancelled one.
    cancel_export(start_export(user, "json"))
    assert centre.next_export_at(user) is None
    monkeypatch.undo()

    done = finished_export(user)
    at = centre.next_export_at(user)
    assert at == done.task.finished_at + timedelta(seconds=600)
    with pytest.raises(centre.ExportRefused, match=at.strftime("%Y-%m-%d %H:%M")):
        start_export(user, "json")
    with pytest.raises(centre.ExportRefused, match="next export"):
        retry_export(fresh(failed))


@pytest.mark.parametrize("config_overrides", [{"EXPORT_COOLDOWN": 0}])
def test_cooldown_zero_turns_it_off(app, config_overrides):
    user = make_user(posts=["hello"])
    finished_export(user)
    assert centre.next_export_at(user) is None
    finished_export(user)


@pytest.mark.parametrize("config_overrides", [{"EXPORT_COOLDOWN": 0}])
def test_retry_runs_a_failed_or_cancelled_export_again_as_a_new_task(
        app, config_overrides, monkeypatch):
    user = make_user(posts=["hello"])
    monkeypatch.setattr(delivery, "write_file", _fail)
    export = start_export(user, "json")
    run_jobs_in_process(app)
    export = fresh(export)
    failed_task = export.task_id
    assert export.status == TaskStatus.FAILED
    monkeypatch.undo()

    retry_export(export)
    run_jobs_in_process(app)
    export = fresh(export)
    assert export.task_id != failed_task and export.status == TaskStatus.FINISHED
    assert get_storage().exists(export.storage_key)
    assert db.session.get(Task, failed_task).status == TaskStatus.FAILED  # history kept
    with pytest.raises(centre.ExportRefused, match="failed or cancelled"):
        retry_export(export)

    cancelled = start_export(user, "json")
    cancel_export(cancelled)
    retry_export(fresh(cancelled))
    run_jobs_in_process(app)
    assert fresh(cancelled).status == TaskStatus.FINISHED


def test_delete_removes_the_file_at_once_and_the_row(app):
    user = make_user(posts=["hello"])
    export = finished_export(user)
    path = get_storage().path(export.storage_key)
    delete_export(export)
    assert not path.exists() and files_in_storage(app) == []
    assert db.session.get(Export, export.id) is None
    assert centre.exports_of(user) == []


def test_delete_of_a_queued_export_cancels_it_first(app):
    user = make_user(posts=["hello"])
    export = start_export(user, "json")
    task_id = export.task_id
    delete_export(export)
    run_jobs_in_process(app)
    assert db.session.get(Task, task_id).status == TaskStatus.CANCELLED
    assert files_in_storage(app) == [] and outbox() == []


def _fail(export, attempt, on_progress=None):
    raise ValueError("the disk said no")
