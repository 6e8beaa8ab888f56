"""The admin role and the admin view /admin/jobs: who is an admin, 404 for everyone else,
the figures and the actions (a failed export retried to success with a real worker and a real
SMTP server; a running export stopped), CSRF and the confirmation step."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import rq
import sqlalchemy as sa
from rq.job import Job, JobStatus

from app import db
from app.models import Notification, Task, TaskStatus, User, utcnow
from tests.conftest import (
    ROOT,
    browser,
    csrf_token,
    login,
    make_user,
    queues_on,
    serve_smtp,
    start_worker,
    wait_for,
)
from tests.conftest import stop_process as _stop

PASSWORD = "correct horse battery"


def _promote(username: str) -> User:
    user = db.session.scalar(sa.select(User).where(User.username == username))
    user.admin = True
    db.session.commit()
    return user


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def _ended_task(user: User, status: str = TaskStatus.FAILED, days_ago: float = 0,
                error: str | None = "The task failed: LookupError.",
                run_seconds: float = 3) -> Task:
    finished = utcnow() - timedelta(days=days_ago)
    task = Task(id=f"t-{user.id}-{status}-{days_ago}", name="export_posts", user_id=user.id,
                status=status, complete=True, error=error, attempts=1,
                created_at=finished - timedelta(seconds=5),
                started_at=finished - timedelta(seconds=run_seconds), finished_at=finished)
    db.session.add(task)
    db.session.commit()
    return task


def _export(client, username="susan") -> str:
    token = csrf_token(client, f"/user/{username}")
    assert client.post("/export_posts", data={"csrf_token": token}).status_code == 302
    return db.session.scalars(sa.select(Task.id).order_by(Task.created_at.desc())).first()


def _confirm_and_post(client, url: str) -> str:
    """The confirmation page's form, submitted: what an admin's two clicks do."""
    page = client.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    assert 'id="confirm"' in html and 'method="post"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    response = client.post(url, data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


# --------------------------------------------------------------------------- the role

def test_admins_come_from_addresses_the_operator_set_and_promote_demote_win(app):
    app.config["ADMIN_EMAILS"] = ["Boss@Example.com"]
    boss = make_user("boss", email="boss@example.com")
    other = make_user("other")
    assert boss.is_admin and not other.is_admin
    boss.admin = False  # demoted: ADMINS no longer makes them one
    other.admin = True
    db.session.commit()
    assert not boss.is_admin and other.is_admin


def test_by_default_nobody_is_an_admin_not_even_the_default_sender_address(app):
    """With no ADMINS in the environment, ADMINS is only the mail sender; registering its
    address (registration does not verify addresses) makes nobody an admin."""
    env = {k: v for k, v in os.environ.items() if k != "ADMINS"}
    out = subprocess.run(
        [sys.executable, "-c",
         "from config import Config; print(Config.ADMIN_EMAILS, Config.ADMINS[0])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "admin@microblog.example"]
    app.config["ADMIN_EMAILS"] = []
    squatter = make_user("squatter", email="admin@microblog.example")
    assert not squatter.is_admin


def test_admins_set_in_the_environment_are_admins_and_the_first_sends_mail(app):
    env = dict(os.environ, ADMINS="ops@example.com, Second@Example.com")
    out = subprocess.run(
        [sys.executable, "-c",
         "from config import Config; print(Config.ADMIN_EMAILS, Config.ADMINS[0])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['ops@example.com', 'Second@Example.com'] ops@example.com"
    app.config["ADMIN_EMAILS"] = ["ops@example.com", "Second@Example.com"]
    assert make_user("second", email="second@example.com").is_admin


def test_promote_and_demote_through_the_cli(app, runner):
    make_user("susan")
    result = runner.invoke(args=["users", "promote", "susan"])
    assert result.exit_code == 0, result.output
    assert "susan is now an admin" in result.output
    db.session.expire_all()
    assert db.session.scalar(sa.select(User).where(User.username == "susan")).is_admin
    listed = runner.invoke(args=["users", "list", "--admins", "--json"])
    assert listed.exit_code == 0
    import json

    assert json.loads(listed.stdout) == [
        {"username": "susan", "email": "susan@example.com", "admin": True, "why": "promoted"}]
    result = runner.invoke(args=["users", "demote", "susan", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["admin"] is False
    db.session.expire_all()
    assert not db.session.scalar(sa.select(User).where(User.username == "susan")).is_admin
    unknown = runner.invoke(args=["users", "promote", "nobody"])
    assert unknown.exit_code == 1 and "no user 'nobody'" in unknown.output
    assert runner.invoke(args=["users", "promote"]).exit_code == 2


# --------------------------------------------------------------------------- 404 for others

def _admin_urls(app, task_id: str) -> list[tuple[str, str]]:
    """Every admin route with its methods, its arguments filled in."""
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin."):
            continue
        values = {"task_id": task_id, "action": "retry"}
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", values[name])
        query = "?days=1" if rule.endpoint == "admin.purge" else ""
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            urls.append((method, path + query))
    return urls


def test_anonymous_visitors_and_non_admins_get_404_on_every_admin_route(app):
    susan = make_user("susan")
    make_user("boss")
    _promote("boss")
    task = _ended_task(susan, days_ago=40)
    urls = _admin_urls(app, task.id)
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()
                 if rule.endpoint.startswith("admin.")}
    assert {"admin.jobs_page", "admin.task", "admin.task_action", "admin.purge"} <= endpoints
    assert ("POST", f"/admin/jobs/{task.id}/retry") in urls

    anonymous = browser(app)
    member = browser(app)
    login(member, "susan")
    token = csrf_token(member, "/user/susan")
    for client, who in ((anonymous, "anonymous"), (member, "non-admin")):
        for method, url in urls:
            for data in ({}, {"csrf_token": token, "days": "1"}):
                response = client.open(url, method=method, data=data)
                assert response.status_code == 404, (who, method, url, response.status_code)
                assert "Location" not in response.headers  # not sent to the login page
                assert "Sorry, that page does not exist." in response.get_data(as_text=True)
    assert _task(task.id).status == TaskStatus.FAILED  # nothing was retried or purged
    assert 'href="/admin/jobs"' not in member.get("/user/susan").get_data(as_text=True)

    admin = browser(app)
    login(admin, "boss")
    assert admin.get("/admin/jobs").status_code == 200
    assert 'href="/admin/jobs"' in admin.get("/user/boss").get_data(as_text=True)


def test_an_admin_action_without_a_csrf_token_is_refused_and_changes_nothing(app):
    susan = make_user("susan")
    make_user("boss")
    _promote("boss")
    task = _ended_task(susan, days_ago=40)
    admin = browser(app)
    login(admin, "boss")
    for url in (f"/admin/jobs/{task.id}/delete", "/admin/purge"):
        response = admin.post(url, data={"days": "1"})
        assert response.status_code == 400, url
        assert "The form expired" in response.get_data(as_text=True)
    assert _task(task.id) is not None


def test_a_demoted_admin_loses_the_pages_at_once(app):
    app.config["ADMIN_EMAILS"] = ["boss@example.com"]
    make_user("boss")
    admin = browser(app)
    login(admin, "boss")
    assert admin.get("/admin/jobs").status_code == 200
    user = db.session.scalar(sa.select(User).where(User.username == "boss"))
    user.admin = False
    db.session.commit()
    assert admin.get("/admin/jobs").status_code == 404


def test_admins_read_every_mail_in_the_outbox_others_only_theirs(app):
    from app.email import send_email

    make_user("susan")
    make_user("john")
    make_user("boss")
    _promote("boss")
    send_email("For susan", "admin@microblog.example", ["susan@example.com"], "hello", "<p>hi</p>",
               sync=True)
    [name] = [p.name for p in Path(app.instance_path, "outbox").glob("*.eml")]
    admin, john = browser(app), browser(app)
    login(admin, "boss")
    login(john, "john")
    assert "For susan" in admin.get("/outbox/").get_data(as_text=True)
    assert admin.get(f"/outbox/{name}").status_code == 200
    assert "For susan" not in john.get("/outbox/").get_data(as_text=True)
    assert john.get(f"/outbox/{name}").status_code == 404


# --------------------------------------------------------------------------- the view

def test_the_view_shows_figures_filters_pages_and_a_task_with_its_reason(app):
    susan = make_user("susan")
    john = make_user("john")
    make_user("boss")
    _promote("boss")
    failed = _ended_task(susan, TaskStatus.FAILED, run_seconds=2,
                         error="The mail server refused the message (550).")
    _ended_task(john, TaskStatus.FINISHED, error=None, run_seconds=10)
    _ended_task(john, TaskStatus.FAILED, days_ago=3)  # outside the 24 h figures
    admin = browser(app)
    login(admin, "boss")
    html = admin.get("/admin/jobs").get_data(as_text=True)

    def figure(key):
        block = html.split(f'data-figure="{key}"')[1]
        return re.search(r'figure-value">([^<]*)<', block).group(1)

    assert figure("failed") == "1" and figure("finished") == "1" and figure("queued") == "0"
    assert figure("latency") == "-"  # nothing waits
    row = html.split('data-type="export_posts"')[1].split("</tr>")[0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[:6] == ["export_posts", "0", "0", "1", "1", "0"]
    # Success rate, then p50 and p95 of the two run times.
    assert cells[6:] == ["50%", "2.0 s", "10.0 s"]
    assert "No worker is running" in html
    assert "The mail server refused the message (550)." in html

    only_failed = admin.get("/admin/jobs?status=failed&user=susan").get_data(as_text=True)
    assert only_failed.count("data-task=") == 1 and failed.id[:8] in only_failed
    assert admin.get("/admin/jobs?status=nonsense").status_code == 400
    assert admin.get("/admin/jobs?type=nope").get_data(as_text=True).count("data-task=") == 0

    page = admin.get(f"/admin/jobs/{failed.id}").get_data(as_text=True)
    assert "The mail server refused the message (550)." in page
    assert f"/admin/jobs/{failed.id}/retry" in page  # failed: retry offered
    assert f"/admin/jobs/{failed.id}/stop" not in page
    assert admin.get("/admin/jobs/no-such-task").status_code == 404
    assert admin.get(f"/admin/jobs/{failed.id}/explode").status_code == 404
    # An action that does not apply says so and changes nothing.
    response = admin.get(f"/admin/jobs/{failed.id}/stop", follow_redirects=True)
    assert "does not apply to a failed task" in response.get_data(as_text=True)


def test_tasks_are_paginated(app):
    susan = make_user("susan")
    make_user("boss")
    _promote("boss")
    for i in range(55):
        _ended_task(susan, days_ago=i / 1000)
    admin = browser(app)
    login(admin, "boss")
    first = admin.get("/admin/jobs?status=failed").get_data(as_text=True)
    assert first.count("data-task=") == 50
    assert "/admin/jobs?page=2&amp;status=failed" in first  # the filter stays on page 2
    second = admin.get("/admin/jobs?status=failed&page=2").get_data(as_text=True)
    assert second.count("data-task=") == 5


def test_purge_and_delete_job_data_from_the_view_with_confirmation(app, caplog):
    susan = make_user("susan")
    make_user("boss")
    _promote("boss")
    old = _ended_task(susan, days_ago=40).id
    recent = _ended_task(susan, TaskStatus.FINISHED, days_ago=1, error=None).id
    susan.add_notification("task_progress", {"task_id": old}, topic=old)
    db.session.commit()
    job = app.task_queue.enqueue("app.tasks.example", 0, job_id=recent)
    admin = browser(app)
    login(admin, "boss")

    html = _confirm_and_post(admin, f"/admin/jobs/{recent}/delete")
    assert "The job data was deleted." in html
    assert not Job.exists(job.id, connection=app.redis)
    assert _task(recent) is not None  # the row stays

    confirm = admin.get("/admin/purge?days=30").get_data(as_text=True)
    assert "Delete the 1 task(s) that ended more than 30 day(s) ago" in confirm
    assert _task(old) is not None  # the GET changed nothing
    token = re.search(r'name="csrf_token" value="([^"]+)"', confirm).group(1)
    done = admin.post("/admin/purge", data={"csrf_token": token, "days": "30"},
                      follow_redirects=True).get_data(as_text=True)
    assert "1 task(s) purged." in done
    assert _task(old) is None and _task(recent) is not None
    assert db.session.scalar(sa.select(sa.func.count(Notification.id)).where(
        Notification.topic == old)) == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "app.jobs.operations"]
    assert f"admin:boss deleted the job data of task {recent} (export_posts of user " \
        f"{susan.id})" in logged
    assert "admin:boss purged 1 task(s) that ended more than 30 day(s) ago" in logged
    bad = admin.get("/admin/purge?days=zero", follow_redirects=True).get_data(as_text=True)
    assert "Enter a whole number of days" in bad


# --------------------------------------------------------------------------- with a worker

def _susan_and_admin_boss(client) -> subprocess.Popen:
    """susan (with posts, signed in on `client`), the admin boss, and a real worker."""
    make_user("susan", posts=["hello", "world"])
    make_user("boss")
    _promote("boss")
    login(client, "susan")
    return start_worker()


def test_an_admin_sees_a_failed_export_with_its_reason_and_retries_it_to_success(
        smtp_server, app, client):
    handler = smtp_server.handler_ref
    handler.fail_with = "550 5.1.1 Mailbox unavailable"
    worker = _susan_and_admin_boss(client)
    try:
        task_id = _export(client)
        wait_for(lambda: _task(task_id).complete, message="the export to fail")
        assert _task(task_id).status == TaskStatus.FAILED
        admin = browser(app)
        login(admin, "boss")
        listing = admin.get("/admin/jobs?status=failed").get_data(as_text=True)
        assert task_id[:8] in listing
        assert "The mail server refused the message (550)." in listing
        page = admin.get(f"/admin/jobs/{task_id}").get_data(as_text=True)
        assert "SMTPDataError" in page and "Traceback" in page  # RQ's record, for admins
        assert 'id="traceback"' in page

        handler.fail_with = None
        html = _confirm_and_post(admin, f"/admin/jobs/{task_id}/retry")
        assert "The task is queued again." in html
        wait_for(lambda: _task(task_id).complete, message="the retry to finish")
    finally:
        log = _stop(worker)
    task = _task(task_id)
    assert task.status == TaskStatus.FINISHED, log
    assert task.attempts == 2 and task.error is None
    assert len(handler.messages) == 1
    assert handler.messages[0]["To"] == "susan@example.com"
    page = admin.get(f"/admin/jobs/{task_id}").get_data(as_text=True)
    assert "finished (100%)" in page


class HoldingSMTP:
    """An SMTP handler that holds every session at RCPT TO until released: an export stuck
    on a slow mail server, before any of the message was sent."""

    def __init__(self):
        self.messages = []
        self.recipients_seen = 0
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.recipients_seen += 1
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 Message accepted for delivery"


@pytest.fixture
def holding_smtp(config_overrides, monkeypatch):
    handler = HoldingSMTP()
    controller = serve_smtp(handler, config_overrides, monkeypatch)
    yield handler
    handler.release.set()
    controller.stop()


def test_an_admin_stops_a_running_export_and_no_mail_goes_out(holding_smtp, app, client):
    worker = _susan_and_admin_boss(client)
    try:
        task_id = _export(client)
        wait_for(lambda: holding_smtp.recipients_seen == 1,
                 message="the export to be sending its mail")
        assert _task(task_id).status == TaskStatus.RUNNING
        admin = browser(app)
        login(admin, "boss")
        assert f"/admin/jobs/{task_id}/stop" in admin.get(f"/admin/jobs/{task_id}").get_data(
            as_text=True)
        html = _confirm_and_post(admin, f"/admin/jobs/{task_id}/stop")
        assert "The task was stopped." in html
        job = Job.fetch(task_id, connection=app.redis)
        wait_for(lambda: job.get_status() == JobStatus.STOPPED,
                 message="RQ to stop the job")
        holding_smtp.release.set()  # a horse still alive would now send the mail
        time.sleep(2)
        assert rq.Worker.all(connection=app.redis), "the worker itself survives"
    finally:
        log = _stop(worker)
    task = _task(task_id)
    assert task.status == TaskStatus.CANCELLED, log
    assert task.error == "Stopped by an administrator."
    assert task.get_progress() < 100
    assert holding_smtp.messages == [] and holding_smtp.recipients_seen == 1  # no retry either
    assert "Stopped by an administrator." in client.get("/user/susan").get_data(as_text=True)


def test_a_killed_worker_shows_as_dead_in_the_workers_table(app):
    make_user("boss")
    _promote("boss")
    worker = start_worker()
    try:
        wait_for(lambda: rq.Worker.count(connection=app.redis) == 1,
                 message="the worker to register")
        admin = browser(app)
        login(admin, "boss")
        row = admin.get("/admin/jobs").get_data(as_text=True).split('data-worker="')[1]
        assert re.search(r"<td[^>]*>idle</td>", row.split("</tr>")[0])
        os.killpg(worker.pid, signal.SIGKILL)  # no goodbye: its registration stays in Redis
        worker.wait(timeout=10)
        html = admin.get("/admin/jobs").get_data(as_text=True)
    finally:
        _stop(worker)
    row = html.split('data-worker="')[1].split("</tr>")[0]
    assert 'class="table-danger"' in row and re.search(r"<td[^>]*>dead</td>", row)


def test_with_redis_down_the_view_and_the_actions_answer_without_a_500(app, tmp_path, runner):
    from redis import Redis

    susan = make_user("susan")
    make_user("boss")
    _promote("boss")
    failed = _ended_task(susan)
    queued = Task(id="queued-1", name="countdown", user_id=susan.id, status=TaskStatus.QUEUED,
                  active_name="countdown", created_at=utcnow())
    db.session.add(queued)
    db.session.commit()
    admin = browser(app)
    login(admin, "boss")
    app.redis = Redis.from_url(f"unix://{tmp_path}/nothing-here.sock", socket_connect_timeout=1)
    queues_on(app, app.redis)

    html = admin.get("/admin/jobs").get_data(as_text=True)
    assert "Redis cannot be reached: queue and worker figures are missing." in html
    assert failed.id[:8] in html  # the tasks come from the database
    page = admin.get(f"/admin/jobs/{failed.id}")
    assert page.status_code == 200 and "not in Redis" in page.get_data(as_text=True)
    html = _confirm_and_post(admin, f"/admin/jobs/{failed.id}/retry")
    assert "Not done: Redis cannot be reached." in html
    assert _task(failed.id).status == TaskStatus.FAILED
    # Cancelling needs only the row: a job that starts later finds it ended.
    html = _confirm_and_post(admin, "/admin/jobs/queued-1/cancel")
    assert "The task was cancelled." in html
    assert _task("queued-1").status == TaskStatus.CANCELLED

    result = runner.invoke(args=["tasks", "stats"])
    assert result.exit_code == 1 and "Redis cannot be reached" in result.output


def test_listing_the_workers_leaves_the_apps_redis_timeout_alone(app):
    """RQ's Worker objects raise the socket timeout of the connection they are given to their
    dequeue timeout (minutes): the workers table reads them on a connection of its own, so a
    hung Redis still fails a web request in seconds."""
    from app.jobs import stats
    from app.redis_connection import redis_from_url

    timeout_before = app.redis.connection_pool.connection_kwargs.get("socket_timeout")
    registered = rq.Worker([app.task_queue.name],
                           connection=redis_from_url(app.config["REDIS_URL"]))
    registered.register_birth()
    try:
        assert registered.name in [w.name for w in stats.workers()]
    finally:
        registered.register_death()
    assert app.redis.connection_pool.connection_kwargs.get("socket_timeout") == timeout_before
