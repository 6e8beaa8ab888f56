"""`flask tasks ...` against a real Redis and real `rq worker` processes: what each command
prints (--json parsed), what it does, and exit codes a script can trust (0 done, 1 no such
task or not applicable, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from rq.job import Job, JobStatus

from app import db
from app.jobs import lifecycle
from app.models import Task, TaskStatus, User, utcnow
from tests.conftest import ROOT, make_user, start_worker, wait_for, worker_env
from tests.conftest import stop_process as _stop


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def _json(runner, *args: str, exit_code: int = 0):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout) if exit_code == 0 else result


def _launch(username: str, name: str, *args) -> str:
    user = db.session.scalar(sa.select(User).where(User.username == username))
    return lifecycle.launch(user, name, name, *args).id


def test_list_show_stats_and_retry_of_a_failed_export(smtp_server, app, runner):
    handler = smtp_server.handler_ref
    handler.fail_with = "550 5.1.1 Mailbox unavailable"
    make_user("susan", posts=["hello"])
    make_user("john")
    worker = start_worker()
    try:
        task_id = _launch("susan", "export_posts")
        wait_for(lambda: _task(task_id).complete, message="the export to fail")

        rows = _json(runner, "tasks", "list")
        assert [(r["id"], r["type"], r["user"], r["status"]) for r in rows] == [
            (task_id, "export_posts", "susan", "failed")]
        assert rows[0]["reason"] == "The mail server refused the message (550)."
        assert _json(runner, "tasks", "list", "--status", "finished") == []
        assert _json(runner, "tasks", "list", "--user", "john") == []
        assert _json(runner, "tasks", "list", "--type", "export_posts", "--user", "susan")
        table = runner.invoke(args=["tasks", "list"]).stdout.splitlines()
        assert table[0].split() == ["ID", "TYPE", "USER", "STATUS", "ATTEMPTS", "QUEUED",
                                    "RUN", "TIME", "REASON"]
        assert table[1].startswith(task_id) and table[0].index("STATUS") == table[1].index(
            "failed")  # aligned columns
        unknown_user = runner.invoke(args=["tasks", "list", "--user", "nobody"])
        assert unknown_user.exit_code == 1 and "no user 'nobody'" in unknown_user.output
        assert runner.invoke(args=["tasks", "list", "--status", "bogus"]).exit_code == 2

        shown = _json(runner, "tasks", "show", task_id[:8])  # a unique prefix will do
        assert shown["id"] == task_id and shown["status"] == "failed"
        assert shown["reason"] == "The mail server refused the message (550)."
        assert shown["attempts"] == 1 and shown["job_status"] == "failed"
        assert "SMTPDataError" in shown["traceback"]
        assert shown["queued_at"] <= shown["started_at"] <= shown["finished_at"]
        text = runner.invoke(args=["tasks", "show", task_id]).stdout
        assert "reason" in text and "Traceback (most recent call last)" in text
        missing = runner.invoke(args=["tasks", "show", "no-such-task"])
        assert missing.exit_code == 1 and "no task 'no-such-task'" in missing.output

        stats = _json(runner, "tasks", "stats")
        [export] = [t for t in stats["types"] if t["name"] == "export_posts"]
        assert (export["failed"], export["finished"], export["queued"]) == (1, 0, 0)
        assert stats["summary"]["failed"] == 1 and stats["depth"] == 0
        [one] = stats["workers"]
        assert one["state"] == "idle" and one["failed_jobs"] == 1 and one["rss_bytes"] > 0
        assert "export_posts" in runner.invoke(args=["tasks", "stats"]).stdout

        handler.fail_with = None
        retried = _json(runner, "tasks", "retry", task_id)
        assert retried == {"id": task_id, "status": "queued", "attempts": 1}
        wait_for(lambda: _task(task_id).complete, message="the retry to finish")
        not_again = runner.invoke(args=["tasks", "retry", task_id])
    finally:
        log = _stop(worker)
    assert _task(task_id).status == TaskStatus.FINISHED, log
    assert _task(task_id).attempts == 2
    assert len(handler.messages) == 1
    assert not_again.exit_code == 1 and "only failed or cancelled" in not_again.output


def test_cancel_stops_a_running_task_and_cancels_a_queued_one(app, runner, caplog):
    make_user("susan")
    make_user("john")
    worker = start_worker()
    try:
        running = _launch("susan", "countdown", 60)
        queued = _launch("john", "countdown", 60)  # waits: the only worker is busy
        wait_for(lambda: _task(running).status == TaskStatus.RUNNING,
                 message="the first countdown to start")

        stats = _json(runner, "tasks", "stats")
        [one] = stats["workers"]
        assert one["state"] == "busy" and one["current_job_id"] == running
        assert one["job_since"] is not None and one["rss_bytes"] > 0
        assert stats["summary"]["running"] == 1 and stats["summary"]["queued"] == 1
        assert stats["depth"] == 1 and stats["latency_seconds"] > 0

        assert _json(runner, "tasks", "cancel", queued) == {
            "id": queued, "status": "cancelled", "outcome": "cancelled"}
        assert Job.fetch(queued, connection=app.redis).get_status() == JobStatus.CANCELED
        assert _json(runner, "tasks", "cancel", running) == {
            "id": running, "status": "cancelled", "outcome": "stopped"}
        job = Job.fetch(running, connection=app.redis)
        wait_for(lambda: job.get_status() == JobStatus.STOPPED,
                 message="RQ to stop the running job")
        again = runner.invoke(args=["tasks", "cancel", running])
        assert again.exit_code == 1 and "already ended" in again.output

        # The worker survived the stop and runs the next job; the cancelled one never ran.
        after = _launch("susan", "noop")
        wait_for(lambda: _task(after).complete, message="the next job to run")
    finally:
        log = _stop(worker)
    assert _task(after).status == TaskStatus.FINISHED, log
    assert _task(running).status == TaskStatus.CANCELLED
    assert _task(running).error == "Stopped by an administrator."
    assert _task(queued).status == TaskStatus.CANCELLED and _task(queued).attempts == 0
    assert _task(queued).started_at is None
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "app.jobs.operations")
    assert "cli:" in logged and f"stopped task {running}" in logged
    assert f"cancelled task {queued}" in logged


def test_purge_deletes_old_ended_tasks_and_their_job_data(app, runner):
    from tests.conftest import run_worker_burst

    make_user("susan")
    make_user("john")
    old, recent = _launch("susan", "noop"), _launch("john", "noop")
    run_worker_burst()
    assert _task(old).status == _task(recent).status == TaskStatus.FINISHED
    _task(old).finished_at = utcnow() - timedelta(days=31)
    db.session.commit()
    assert Job.exists(old, connection=app.redis)

    assert _json(runner, "tasks", "purge", "--older-than", "30d", "--dry-run")["would_purge"] == 1
    assert _task(old) is not None
    assert _json(runner, "tasks", "purge", "--older-than", "30d")["purged"] == 1
    assert _task(old) is None and _task(recent) is not None
    assert not Job.exists(old, connection=app.redis) and Job.exists(recent, connection=app.redis)
    assert _json(runner, "tasks", "purge", "--older-than", "12h")["purged"] == 0
    for bad in ("soon", "0d", "-3d"):
        result = runner.invoke(args=["tasks", "purge", "--older-than", bad])
        assert result.exit_code == 2, (bad, result.output)
    assert runner.invoke(args=["tasks", "purge"]).exit_code == 2


def test_exit_codes_of_the_real_flask_command(app):
    """What a shell script sees: the `flask` executable, from the repo root."""
    make_user("susan")
    task_id = _launch("susan", "noop")
    flask = str(Path(sys.executable).parent / "flask")

    def run(*args):
        return subprocess.run([flask, "tasks", *args], cwd=ROOT, env=worker_env(),
                              capture_output=True, text=True, timeout=120)

    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [task_id]
    missing = run("show", "nope-nope")
    assert missing.returncode == 1 and "no task 'nope-nope'" in missing.stderr
    assert missing.stdout == ""
    assert run("purge").returncode == 2


def test_retry_keeps_one_active_task_per_name_and_requeues_a_cancelled_job(app, runner):
    """A retry puts the task back as active: refused while its user has another of that name
    in progress (the unique constraint), then allowed; a cancelled job goes back to the queue."""
    susan = make_user("susan")
    stopped = Task(id="cancelled-1", name="export_posts", user_id=susan.id, complete=True,
                   status=TaskStatus.CANCELLED, error="Cancelled by an administrator.",
                   created_at=utcnow(), finished_at=utcnow())
    running = Task(id="running-1", name="export_posts", user_id=susan.id,
                   status=TaskStatus.RUNNING, active_name="export_posts", created_at=utcnow())
    db.session.add_all([stopped, running])
    db.session.commit()
    Job.create("app.tasks.export_posts", args=(susan.id,), id="cancelled-1",
               connection=app.redis, origin=app.task_queue.name).save()
    Job.fetch("cancelled-1", connection=app.redis).cancel()

    refused = runner.invoke(args=["tasks", "retry", "cancelled-1"])
    assert refused.exit_code == 1
    assert "susan already has a export_posts task in progress" in refused.output
    assert _task("cancelled-1").status == TaskStatus.CANCELLED
    assert app.task_queue.count == 0

    _task("running-1").status = TaskStatus.FAILED
    _task("running-1").complete, _task("running-1").active_name = True, None
    db.session.commit()
    assert _json(runner, "tasks", "retry", "cancelled-1")["status"] == "queued"
    task = _task("cancelled-1")
    assert (task.status, task.complete, task.active_name, task.error) == (
        TaskStatus.QUEUED, False, "export_posts", None)
    assert app.task_queue.get_job_ids() == ["cancelled-1"]
    assert Job.fetch("cancelled-1", connection=app.redis).retries_left == 3
