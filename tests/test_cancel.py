"""One cancel for users and operators (app.jobs.lifecycle.cancel), with real `rq worker`
processes: a running task is asked to stop and cleans up after itself; one that has not
stopped TASK_CANCEL_GRACE seconds later is killed by its worker (an operator's stop gives no
grace). Either way it ends `cancelled`, never failed, never retried, and its user is told the
same way whoever cancelled it."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from app import db
from app.exports.actions import cancel_export, start_export
from app.jobs import lifecycle
from app.models import Export, Task, TaskStatus, User
from tests.conftest import (
    browser,
    csrf_token,
    login,
    make_user,
    start_worker,
    stop_process,
    wait_for,
    worker_env,
)
from tests.test_admin import holding_smtp  # noqa: F401 -- a fixture
from tests.test_export_lifecycle import add_posts, files_in_storage, fresh

GRACE = 3.0  # seconds: short, so that the hard stop is seen soon, and long enough to measure
KILLED = "its grace is over: killing its work horse"  # AppWorker's log line


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def _member(app, username: str):
    """A browser of `username`, who has a few posts to export."""
    make_user(username, posts=["hello", "world"])
    member = browser(app)
    login(member, username)
    return member


def _start_export(member) -> str:
    token = csrf_token(member, "/exports")
    assert member.post("/exports", data={"csrf_token": token, "format": "json"}
                       ).status_code == 302
    return db.session.scalars(sa.select(Task.id).order_by(Task.created_at.desc())).first()


def _user_cancels(member, task_id: str) -> None:
    export_id = db.session.scalar(sa.select(Export.id).where(Export.task_id == task_id))
    token = csrf_token(member, "/exports")
    response = member.post(f"/exports/{export_id}/cancel", data={"csrf_token": token},
                           follow_redirects=True)
    assert "The export was cancelled." in response.get_data(as_text=True)


def _admin_cancels(app, task_id: str, action: str) -> None:
    """The admin's two clicks on /admin/jobs: the action, then its confirmation."""
    admin = browser(app)
    login(admin, "boss")
    url = f"/admin/jobs/{task_id}/{action}"
    response = admin.post(url, data={"csrf_token": csrf_token(admin, url)}, follow_redirects=True)
    assert f"The task was {'stopped' if action == 'stop' else 'cancelled'}." in (
        response.get_data(as_text=True))


def _stuck_export(member, holding_smtp, senders: int) -> str:  # noqa: F811
    """An export stuck handing its mail to a server that does not answer: a task that
    reports no progress there, and so cannot see a cancel."""
    task_id = _start_export(member)
    wait_for(lambda: holding_smtp.recipients_seen == senders,
             message="the export to be sending its mail")
    assert _task(task_id).status == TaskStatus.RUNNING
    return task_id


def _ending(app, member, task_id: str) -> dict:
    """How a cancelled task ended, as its user's export history and RQ tell it, the reason
    (each actor's own) left out."""
    task = _task(task_id)
    export_id = db.session.scalar(sa.select(Export.id).where(Export.task_id == task_id))
    html = member.get("/exports").get_data(as_text=True)
    row = html.split(f'id="export-{export_id}"')[1].split(">", 1)[1].split("</tr>")[0]
    row = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
    assert task.error in row
    return {"status": task.status, "complete": task.complete, "attempts": task.attempts,
            "progress_below_100": task.progress < 100,
            "rq": Job.fetch(task_id, connection=app.redis).get_status(),
            "row": re.sub(r"\d", "#", row.replace(task.error, "<reason>"))}


@pytest.fixture
def config_overrides():
    return {"EXPORT_COOLDOWN": 0, "ADMIN_EMAILS": ["boss@example.com"]}


def test_a_task_that_does_not_stop_itself_is_killed_after_the_grace_and_ends_cancelled(
        holding_smtp, app):  # noqa: F811
    app.config["TASK_CANCEL_GRACE"] = GRACE
    susan = _member(app, "susan")
    worker = start_worker()
    try:
        task_id = _stuck_export(susan, holding_smtp, senders=1)
        job = Job.fetch(task_id, connection=app.redis)
        asked = time.monotonic()
        _user_cancels(susan, task_id)
        assert _task(task_id).status == TaskStatus.CANCELLED  # at once, for its user
        wait_for(lambda: job.get_status() == JobStatus.STOPPED, message="the hard stop")
        stopped_after = time.monotonic() - asked

        # Nothing more happens to it: the worker goes on to the next job, and the export is
        # neither retried nor able to send its mail now that the server answers.
        holding_smtp.release.set()
        user = db.session.scalar(sa.select(User).where(User.username == "susan"))
        after = lifecycle.launch(user, "noop", "noop").id
        wait_for(lambda: _task(after).complete, message="the next job to run")
    finally:
        log = stop_process(worker)
    assert stopped_after >= GRACE, log
    assert KILLED in log and "terminated unexpectedly" not in log, log
    task = _task(task_id)
    assert (task.status, task.error, task.attempts) == (
        TaskStatus.CANCELLED, "Cancelled by you.", 1), log
    assert job.get_status() == JobStatus.STOPPED
    assert task_id not in ScheduledJobRegistry(queue=app.task_queue).get_job_ids()
    assert task_id not in app.task_queue.get_job_ids()
    assert holding_smtp.messages == [] and holding_smtp.recipients_seen == 1
    assert _task(after).status == TaskStatus.FINISHED


@pytest.mark.timeout(600)
def test_a_task_that_stops_itself_within_the_grace_cleans_up_and_is_not_killed(
        app, smtp_server):
    app.config["TASK_CANCEL_GRACE"] = 60  # far longer than a batch of posts takes
    user = make_user()
    add_posts(user, 30_000)
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=3, TASK_PROGRESS_INTERVAL=0))
    try:
        export = start_export(user, "json")
        job = Job.fetch(export.task_id, connection=app.redis)
        wait_for(lambda: _task(export.task_id).progress >= 1, interval=0.02,
                 message="the export to run")
        cancel_export(fresh(export))
        wait_for(lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED,
                                              JobStatus.STOPPED),
                 interval=0.05, message="the job to end")
    finally:
        log = stop_process(worker)
    # Ended by itself, cleanly: RQ counts it finished; no file, no mail, no kill.
    assert job.get_status() == JobStatus.FINISHED, log
    assert KILLED not in log, log
    task = _task(export.task_id)
    assert (task.status, task.error, task.attempts) == (
        TaskStatus.CANCELLED, "Cancelled by you.", 1)
    assert files_in_storage(app) == [] and smtp_server.handler_ref.messages == []


def test_an_admins_cancel_and_a_users_end_a_task_the_same_way(holding_smtp, app):  # noqa: F811
    app.config["TASK_CANCEL_GRACE"] = 1
    susan, john = _member(app, "susan"), _member(app, "john")
    make_user("boss")  # an admin: in ADMIN_EMAILS (ADMINS)

    # Queued (no worker yet): susan cancels hers, an admin john's.
    queued_by_user, queued_by_admin = _start_export(susan), _start_export(john)
    _user_cancels(susan, queued_by_user)
    _admin_cancels(app, queued_by_admin, "cancel")
    by_user, by_admin = _ending(app, susan, queued_by_user), _ending(app, john, queued_by_admin)
    assert by_user == by_admin
    assert by_user["status"] == TaskStatus.CANCELLED and by_user["attempts"] == 0
    assert by_user["rq"] == JobStatus.CANCELED
    assert "Cancelled" in by_user["row"] and "Retry" in by_user["row"]

    # Running, stuck where it cannot see the cancel: killed after the user's grace, or at
    # once for the admin's stop.
    worker = start_worker()
    try:
        running_by_user = _stuck_export(susan, holding_smtp, senders=1)
        _user_cancels(susan, running_by_user)
        wait_for(lambda: Job.fetch(running_by_user, connection=app.redis).get_status()
                 == JobStatus.STOPPED, message="the user's cancel to stop the job")
        running_by_admin = _stuck_export(john, holding_smtp, senders=2)
        _admin_cancels(app, running_by_admin, "stop")
        wait_for(lambda: Job.fetch(running_by_admin, connection=app.redis).get_status()
                 == JobStatus.STOPPED, message="the admin's stop to stop the job")
    finally:
        log = stop_process(worker)
    by_user = _ending(app, susan, running_by_user)
    by_admin = _ending(app, john, running_by_admin)
    assert by_user == by_admin, log
    assert by_user["status"] == TaskStatus.CANCELLED and by_user["attempts"] == 1
    assert by_user["rq"] == JobStatus.STOPPED and by_user["progress_below_100"]
    assert "Cancelled" in by_user["row"] and "Retry" in by_user["row"]
    assert _task(running_by_user).error == "Cancelled by you."
    assert _task(running_by_admin).error == "Stopped by an administrator."
    assert holding_smtp.messages == []
