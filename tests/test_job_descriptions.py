"""What a job shows of itself: its RQ description (in the worker's log, in Redis, in every
dashboard) and the repr of its arguments (which RQ attaches to a failed job's log record)
name the work, never a mail's body or a password-reset token. Real `rq worker` processes."""

from __future__ import annotations

import re

import pytest

from app import tasks as _worker_tasks  # noqa: F401  (imported early: see tests/test_email.py)
from tests.conftest import csrf_token, make_user, run_worker_burst

# What RQ and the worker's log show of a job, whatever the database: CI runs
# it once (SQLite).
pytestmark = pytest.mark.once

RESET_LINK = re.compile(r"/auth/reset_password/([\w.-]+)")
RESET_SUBJECT = "[Microblog] Reset Your Password"


def request_reset(client) -> None:
    response = client.post("/auth/reset_password_request", data={
        "email": "susan@example.com",
        "csrf_token": csrf_token(client, "/auth/reset_password_request")})
    assert response.status_code == 302


def queued_mail_job(app):
    jobs = app.job_queues[app.config["MAIL_QUEUE"]].jobs
    assert [job.func_name for job in jobs] == ["app.tasks.send_email_job"]
    return jobs[0]


def test_a_reset_token_is_in_the_mail_but_not_in_the_worker_log_or_the_job(smtp_server, app,
                                                                          client):
    make_user()
    request_reset(client)
    job = queued_mail_job(app)

    worker = run_worker_burst()
    assert worker.returncode == 0, worker.stdout + worker.stderr

    [mail] = smtp_server.handler_ref.messages
    assert mail["Subject"] == RESET_SUBJECT
    token = RESET_LINK.search(mail.get_body(preferencelist=("plain",)).get_content()).group(1)
    log = worker.stdout + worker.stderr
    job.refresh()
    assert job.get_status() == "finished"
    assert job.description == f"send_email: '{RESET_SUBJECT}' to 1 recipient(s)"
    assert job.description in log  # RQ logged the job by its description...
    for shown in (log, job.description, repr(job.args), repr(job.kwargs)):
        assert token not in shown  # ...and nothing of the mail
        assert "Dear susan" not in shown


def test_a_failing_mail_job_logs_its_error_without_the_token(dead_smtp_port, app, client):
    """A failed job is logged with its traceback, and RQ passes the job's arguments to the
    log handlers as well (a JSON or Sentry handler would print them)."""
    make_user()
    request_reset(client)
    job = queued_mail_job(app)
    token = RESET_LINK.search(job.args[0].text_body).group(1)

    worker = run_worker_burst()
    log = worker.stdout + worker.stderr
    assert "ConnectionRefusedError" in log, log  # the failure was logged
    for shown in (log, job.description, repr(job.args), str(job.args)):
        assert token not in shown
        assert "Dear susan" not in shown


def test_a_launched_task_is_described_by_its_name_and_user(app, logged_in, user):
    response = logged_in.post("/export_posts", data={
        "csrf_token": csrf_token(logged_in, "/user/susan")})
    assert response.status_code == 302
    [job] = app.job_queues[app.config["BULK_QUEUE"]].jobs
    assert job.description == f"export_posts for user {user.id}"
