"""Background jobs end to end: real Redis, real `rq worker` processes, a real SMTP server."""

from __future__ import annotations

import json
import os
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
from redis import Redis

from app import db
from app.exports.storage import get_storage
from app.models import Export, Post, Task, TaskStatus, User
from tests.conftest import (
    EVENT_TIMEOUT,
    QUEUES,
    ROOT,
    WORKER_ARGS,
    csrf_token,
    login,
    make_user,
    queues_on,
    run_worker_burst,
    start_worker,
    wait_for,
    worker_env,
)
from tests.conftest import (
    stop_process as _stop,
)

TRICKY_BODIES = [
    "plain first post",
    '<script>alert("x")</script> & <b>bold</b>',
    "quotes \" and ' and \\ backslash",
    "emoji 😀🎉 and 한국어",
    "line one\nline two\n\ttabbed",
]


def _export(client) -> None:
    token = csrf_token(client, "/user/susan")
    response = client.post("/export_posts", data={"csrf_token": token})
    assert response.status_code == 302


def _task(task_id=None) -> Task:
    db.session.expire_all()
    if task_id:
        return db.session.get(Task, task_id)
    return db.session.scalars(sa.select(Task)).one()


def attachment_of(message, filename="posts.json"):
    for part in message.iter_attachments():
        if part.get_filename() == filename:
            return part
    raise AssertionError(f"no {filename} attached")


def test_export_of_n_posts_arrives_at_the_smtp_server_with_exactly_those_posts(
        app, client, smtp_server):
    make_user(posts=TRICKY_BODIES)
    login(client)
    _export(client)

    result = run_worker_burst()
    assert result.returncode == 0, result.stderr

    task = _task()
    assert task.status == TaskStatus.FINISHED and task.complete and task.progress == 100
    [message] = smtp_server.handler_ref.messages
    assert message["Subject"] == "[Microblog] Your blog posts"
    assert message["To"] == "susan@example.com"
    assert "Please find attached" in message.get_body(("plain",)).get_content()
    assert "Please find attached" in message.get_body(("html",)).get_content()
    part = attachment_of(message)
    assert part.get_content_type() == "application/json"
    data = json.loads(part.get_content())
    assert [p["body"] for p in data["posts"]] == TRICKY_BODIES  # oldest first, exact
    assert all(p["timestamp"].endswith("Z") for p in data["posts"])
    assert data["user"] == "susan" and data["version"] == 1
    # The page says so, in green, naming the next step; the export is in the export centre
    # too, its file (the attached one) in storage, linked from the mail.
    html = client.get("/user/susan").get_data(as_text=True)
    assert ("Your posts were exported. Check your email, or download them from your exports."
            in html)
    export = db.session.scalars(sa.select(Export)).one()
    assert export.status == TaskStatus.FINISHED and export.format == "json"
    assert b"".join(get_storage().read(export.storage_key)) == part.get_content()
    link = f"{app.config['PUBLIC_BASE_URL']}/exports/{export.id}/download"
    assert link in message.get_body(("plain",)).get_content()


def test_an_export_of_zero_posts_is_an_empty_list(app, client, smtp_server):
    make_user()
    login(client)
    _export(client)
    assert run_worker_burst().returncode == 0
    [message] = smtp_server.handler_ref.messages
    assert json.loads(attachment_of(message).get_content())["posts"] == []
    assert _task().status == TaskStatus.FINISHED


def test_polled_progress_is_monotonic_and_ends_at_100(app, client, config_overrides):
    user = make_user()
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(3000)])
    db.session.commit()
    login(client)
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=50, TASK_PROGRESS_INTERVAL=0))
    try:
        _export(client)
        seen, since, status = [], 0.0, None
        deadline = time.monotonic() + EVENT_TIMEOUT
        while status not in TaskStatus.TERMINAL and time.monotonic() < deadline:
            for n in client.get(f"/notifications?since={since}").get_json():
                since = max(since, n["timestamp"])
                if n["name"] == "task_progress":
                    seen.append(n["data"]["progress"])
                    status = n["data"]["status"]
            time.sleep(0.02)
    finally:
        log = _stop(worker)
    assert status == TaskStatus.FINISHED, log
    assert seen == sorted(seen), seen
    assert seen[-1] == 100
    assert len(set(seen)) > 2, f"no intermediate progress seen: {seen}"


def test_export_makes_at_most_about_100_progress_writes(app, monkeypatch, config_overrides):
    from app.jobs import lifecycle
    from tests.conftest import run_jobs_in_process

    app.config["TASK_PROGRESS_INTERVAL"] = 0  # only the whole-percent rule applies
    app.config["EXPORT_BATCH_SIZE"] = 10  # progress is reported per batch: 500 of them

    user = make_user()
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(5000)])
    db.session.commit()
    writes = []
    original = lifecycle.set_progress
    monkeypatch.setattr(lifecycle, "set_progress", lambda p, job=None, detail=None: (
        writes.append(p), original(p, job, detail)))
    user.launch_task("export_posts", "Exporting posts...")
    run_jobs_in_process(app)
    assert _task().status == TaskStatus.FINISHED
    assert 50 <= len(writes) <= 100, len(writes)
    assert writes == sorted(set(writes)) and max(writes) <= 99  # 100 only comes with finish


def test_the_task_row_exists_before_any_worker_can_see_the_job(app, client, monkeypatch):
    """The tutorial enqueued first and committed after: a fast worker found no row. Here the
    row must be visible to another database connection at the moment the job is enqueued."""
    make_user()
    login(client)
    other_connection = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    seen_at_enqueue = []
    original = rq.Queue.enqueue

    def checking_enqueue(queue, f, *args, **kwargs):
        with other_connection.connect() as conn:
            seen_at_enqueue.append(conn.execute(sa.text(
                "SELECT status FROM task WHERE id = :id"), {"id": kwargs["job_id"]}).scalar())
        return original(queue, f, *args, **kwargs)

    monkeypatch.setattr(rq.Queue, "enqueue", checking_enqueue)
    _export(client)
    other_connection.dispose()
    assert seen_at_enqueue == ["queued"]


def test_a_worker_already_waiting_picks_the_job_up_and_the_task_finishes(app, client):
    make_user(posts=["hello"])
    login(client)
    worker = start_worker()
    try:
        # the worker is listening before the request arrives
        wait_for(lambda: any(w.get_state() == "idle"
                             for w in rq.Worker.all(connection=app.redis)),
                 message="the worker to wait for jobs")
        _export(client)
        wait_for(lambda: _task().complete, message="task to end")
    finally:
        log = _stop(worker)
    assert _task().status == TaskStatus.FINISHED, log


def test_ten_concurrent_export_requests_create_exactly_one_task(app, client):
    make_user(posts=["hello"])
    login(client)
    token = csrf_token(client, "/user/susan")
    cookie = client.get_cookie("session", domain="localhost.localdomain")
    barrier = threading.Barrier(10)
    responses = []

    def post():
        c = app.test_client()
        c.set_cookie("session", cookie.value, domain=cookie.domain)
        barrier.wait()
        r = c.post("/export_posts", data={"csrf_token": token}, follow_redirects=True)
        responses.append((r.status_code, r.get_data(as_text=True)))

    threads = [threading.Thread(target=post) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [code for code, _ in responses] == [200] * 10
    refused = [html for _, html in responses if "An export task is currently in progress" in html]
    assert len(refused) == 9
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 1
    assert app.job_queues["microblog-bulk"].count == 1


def test_second_export_request_while_one_runs_is_refused_and_control_hidden(app, client):
    make_user(posts=["hello"])
    login(client)
    _export(client)
    html = client.get("/user/susan").get_data(as_text=True)
    assert 'id="export-control"' in html and 'class="d-none"' in html
    token = csrf_token(client, "/user/susan")
    r = client.post("/export_posts", data={"csrf_token": token}, follow_redirects=True)
    assert "An export task is currently in progress" in r.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 1
    assert run_worker_burst().returncode == 0
    html = client.get("/user/susan").get_data(as_text=True)
    assert 'class="d-none"' not in html.split('id="export-control"')[1].split(">")[0]


def test_export_fails_honestly_when_the_mail_server_stays_down(app, client, dead_smtp_port):
    make_user(posts=["hello"])
    login(client)
    worker = start_worker()
    try:
        _export(client)
        wait_for(lambda: _task().complete, timeout=90, message="task to end")
    finally:
        log = _stop(worker)
    task = _task()
    assert task.status == TaskStatus.FAILED, log
    assert task.error == "The mail server could not be reached."
    assert task.attempts == 4  # the first try and three retries
    assert task.get_progress() < 100
    html = client.get("/user/susan").get_data(as_text=True)
    assert "The mail server could not be reached." in html and "alert-danger" in html
    assert 'class="d-none"' not in html.split('id="export-control"')[1].split(">")[0]
    failed = [n["data"] for n in client.get("/notifications").get_json()
              if n["name"] == "task_progress"]
    assert failed[-1]["status"] == "failed"


def test_a_transient_mail_error_is_retried_and_the_mail_sent_once(app, client, smtp_server):
    handler = smtp_server.handler_ref
    handler.fail_with = "451 4.3.0 Try again later"
    make_user(posts=["hello"])
    login(client)
    worker = start_worker()
    try:
        _export(client)
        wait_for(lambda: _task().attempts >= 1 and _task().error,
                 message="first attempt to fail")
        assert _task().status == TaskStatus.QUEUED
        assert "Retrying automatically" in _task().error
        handler.fail_with = None
        wait_for(lambda: _task().complete, message="task to end")
    finally:
        log = _stop(worker)
    assert _task().status == TaskStatus.FINISHED, log
    assert len(handler.messages) == 1


def test_a_retried_export_never_sends_the_same_email_twice(smtp_server, app, monkeypatch):
    """A transient failure after the mail went out (here: finishing the task) retries the job;
    the retry must not mail the user again."""
    from app.jobs import lifecycle
    from tests.conftest import run_jobs_in_process

    app.config["MAIL_RETRY_INTERVALS"] = [0]
    user = make_user(posts=["hello"])
    original, calls = lifecycle.finish, []

    def flaky_finish(message=None):
        calls.append(message)
        if len(calls) == 1:
            raise ConnectionError("database connection dropped")
        return original(message)

    monkeypatch.setattr(lifecycle, "finish", flaky_finish)
    user.launch_task("export_posts", "Exporting posts...")
    run_jobs_in_process(app)
    assert len(calls) == 2
    assert _task().status == TaskStatus.FINISHED
    assert len(smtp_server.handler_ref.messages) == 1


def test_a_burst_worker_quits_as_soon_as_its_queue_is_empty(app):
    """Between RQ's "unsubscribing" (the worker is done) and the process's exit there is only
    teardown. With redis-py 8.2 and RQ's own unsubscribe it could take a minute (the listening
    thread waited for a subscription), in every burst run and every warm shutdown."""
    make_user(posts=["hello"]).launch_task("countdown", "Counting", 1)
    worker = start_worker(args=[*WORKER_ARGS, "--burst"])
    try:
        for line in worker.stdout:
            if "unsubscribing from channel" in line:
                break
        unsubscribing = time.monotonic()
        worker.wait(timeout=EVENT_TIMEOUT)
        teardown = time.monotonic() - unsubscribing
    finally:
        log = _stop(worker)
    assert worker.returncode == 0, log
    assert _task().status == TaskStatus.FINISHED, log
    # 60 s before; a loaded machine still tears down in well under half of that
    assert teardown < 30, f"{teardown:.1f} s from unsubscribing to exit"


def test_a_job_that_runs_too_long_fails_with_a_clear_reason(app, client):
    user = make_user()
    login(client)
    task = user.launch_task("countdown", "Counting", 30, job_timeout=1)
    assert run_worker_burst().returncode == 0
    task = _task(task.id)
    assert task.status == TaskStatus.FAILED
    assert task.error == "The task took too long and was stopped."
    assert task.get_progress() < 100


def test_a_sigkilled_worker_leaves_no_task_in_progress(app, client, smtp_server):
    """Kill the worker and its work horse mid-export: RQ's abandoned-job handling (found by
    the page's poll, or by another worker's maintenance) retries it; the user gets one mail."""
    user = make_user()
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(100000)])
    db.session.commit()
    login(client)
    victim = start_worker(env=worker_env(EXPORT_BATCH_SIZE=10))
    try:
        _export(client)
        wait_for(lambda: _task().status == TaskStatus.RUNNING and _task().progress > 0,
                 interval=0.05, message="export to be running")
        horses = children_of(victim.pid)  # the work horse has a process group of its own
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        # ... and dies with its worker, rather than running on unwatched.
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and
                                 "Z" not in _proc_state(pid) for pid in horses),
                 message="the orphaned work horse to die")
        # The page keeps polling; within the bound the task is no longer "running".
        wait_for(lambda: (client.get("/notifications"), _task().status)[1] != "running",
                 timeout=120, interval=0.5, message="task to leave 'running'")
        noticed_after = time.monotonic() - killed_at
        task = _task()
        assert task.status == TaskStatus.QUEUED
        assert task.error == ("The worker running this task stopped unexpectedly. "
                              "Retrying automatically.")
        rescuer = start_worker()
        try:
            wait_for(lambda: _task().complete, timeout=120, message="retry to finish")
        finally:
            _stop(rescuer)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert _task().status == TaskStatus.FINISHED
    assert len(smtp_server.handler_ref.messages) == 1
    assert noticed_after < 120


def test_the_tutorials_shell_session_runs_example_with_progress(app, redis_server):
    queue = rq.Queue("microblog-tasks", connection=Redis.from_url(redis_server))
    job = queue.enqueue("app.tasks.example", 2)
    assert isinstance(job.id, str) and job.id  # the README's `job.id` (the chapter's get_id())
    # `rq worker -u $REDIS_URL microblog-tasks`, verbatim (plus --burst so it returns).
    rq_bin = str(Path(sys.executable).parent / "rq")
    # RQ's own Worker may wait up to 60 s on its way out (app.jobs.worker.PromptExit says why).
    result = subprocess.run([rq_bin, "worker", "-u", redis_server, "--burst", "microblog-tasks"],
                            cwd=ROOT, env=worker_env(), capture_output=True, text=True,
                            timeout=60 + EVENT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    job.refresh()
    assert job.get_status() == "finished"
    assert job.meta["progress"] == 100
    assert "Task completed" in result.stdout + result.stderr


def test_plain_rq_worker_with_redis_url_from_the_environment_runs_the_export(
        app, client, smtp_server):
    make_user(posts=["hello"])
    login(client)
    _export(client)
    # `rq worker microblog-mail microblog-tasks microblog-bulk`: the tutorial's command, with
    # the queues mail and exports wait in; REDIS_URL from the environment.
    result = run_worker_burst(args=[], queues=QUEUES)
    assert result.returncode == 0, result.stderr
    assert _task().status == TaskStatus.FINISHED
    assert len(smtp_server.handler_ref.messages) == 1


def test_export_without_csrf_token_is_refused_and_starts_nothing(app, client):
    make_user()
    login(client)
    response = client.post("/export_posts")
    assert response.status_code == 400
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 0
    assert app.task_queue.count == 0


def test_export_by_get_is_not_allowed(app, client):
    make_user()
    login(client)
    assert client.get("/export_posts").status_code == 405


def test_one_user_cannot_see_or_touch_another_users_task(app, client):
    susan = make_user()
    make_user("mallory")
    task = susan.launch_task("export_posts", "Exporting posts...")
    login(client, "mallory")
    assert [n for n in client.get("/notifications").get_json()
            if n["name"] == "task_progress"] == []
    assert client.get(f"/tasks/{task.id}").status_code == 404
    token = csrf_token(client, "/index")
    assert client.post(f"/tasks/{task.id}/dismiss",
                       data={"csrf_token": token}).status_code == 404
    assert "Exporting posts" not in client.get("/index").get_data(as_text=True)


def test_redis_down_means_a_clear_message_not_a_500(app, client, config_overrides, tmp_path):
    make_user(posts=["hello"])
    login(client)
    app.redis = Redis.from_url(f"unix://{tmp_path}/nothing-here.sock", socket_connect_timeout=1)
    queues_on(app, app.redis)
    token = csrf_token(client, "/user/susan")
    response = client.post("/export_posts", data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Background jobs are unavailable right now" in html
    task = _task()
    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("Background jobs are unavailable right now")
    assert client.get("/notifications").status_code == 200


def test_a_task_whose_job_vanished_ends_failed_not_at_100(app, client, monkeypatch):
    from app.jobs import reconcile

    user = make_user()
    login(client)
    task = user.launch_task("export_posts", "Exporting posts...")
    app.redis.flushdb()  # the job is gone (Redis lost its data)
    monkeypatch.setattr(reconcile, "ENQUEUE_GRACE", timedelta(0))
    client.get("/notifications")
    task = _task(task.id)
    assert task.status == TaskStatus.FAILED
    assert task.error == "The task was lost by the job queue."
    assert task.get_progress() < 100


def test_flask_tasks_reconcile_command_ends_lost_tasks(app, runner, monkeypatch):
    from app.jobs import reconcile

    user = make_user()
    user.launch_task("export_posts", "Exporting posts...")
    app.redis.flushdb()
    monkeypatch.setattr(reconcile, "ENQUEUE_GRACE", timedelta(0))
    result = runner.invoke(args=["tasks", "reconcile"])
    assert "1 task(s) ended." in result.output
    assert _task().status == TaskStatus.FAILED


def test_a_job_handed_to_a_worker_that_was_gone_is_put_back_and_runs(app, client, monkeypatch):
    # A worker waits for jobs in BLPOP. Its process dies (or its host drops off the network)
    # and, until Redis notices the connection is gone, that BLPOP is still served: the job
    # it is handed is read by no one, RQ never runs it, and the task would stay queued.
    from app.jobs import reconcile

    user = make_user()
    login(client)
    pool = app.redis.connection_pool
    gone = pool.connection_class(**pool.connection_kwargs)
    gone.send_command("BLPOP", *(queue.key for queue in app.job_queues.values()), 0)
    wait_for(lambda: any("b" in c["flags"] for c in app.redis.client_list()),
             message="the gone worker's BLPOP to block")
    task = user.launch_task("noop", "Doing nothing...")
    job = rq.job.Job.fetch(task.id, connection=app.redis)
    queue = app.job_queues[job.origin]
    wait_for(lambda: app.redis.lpos(queue.key, task.id) is None,
             message="the job handed to the gone worker")
    gone.disconnect()
    assert job.get_status() == "queued"
    assert run_worker_burst().returncode == 0 and _task(task.id).status == TaskStatus.QUEUED

    monkeypatch.setattr(reconcile, "DEQUEUED_GRACE", timedelta(seconds=1))
    assert client.get("/notifications").status_code == 200  # first seen out of its queue
    assert app.redis.lpos(queue.key, task.id) is None  # not yet: a worker may just have it
    time.sleep(1.1)
    client.get("/notifications")
    assert app.redis.lpos(queue.key, task.id) == 0  # back, at the front
    assert run_worker_burst().returncode == 0
    assert _task(task.id).status == TaskStatus.FINISHED
    client.get("/notifications")  # a finished job is left alone
    assert app.redis.llen(queue.key) == 0


def test_export_too_large_to_attach_is_not_attached_and_the_mail_says_so(
        app, client, smtp_server, config_overrides):
    make_user(posts=["x" * 200] * 20)
    login(client)
    _export(client)
    assert run_worker_burst(env=worker_env(EXPORT_ATTACHMENT_LIMIT=1000)).returncode == 0
    [message] = smtp_server.handler_ref.messages
    assert list(message.iter_attachments()) == []
    text = message.get_body(("plain",)).get_content()
    assert "larger than the 1.0 kB" in text and "It is ready to download." in text
    export = db.session.scalars(sa.select(Export)).one()
    assert f"{app.config['PUBLIC_BASE_URL']}/exports/{export.id}/download" in text
    assert "Download them from your exports" in _task().result_message


def test_two_tasks_of_one_user_keep_separate_notifications(app, client):
    user = make_user(posts=["hello"])
    login(client)
    first = user.launch_task("export_posts", "Exporting posts...")
    second = user.launch_task("countdown", "Counting", 1)
    ids = {n["data"]["task_id"] for n in client.get("/notifications").get_json()
           if n["name"] == "task_progress"}
    assert run_worker_burst().returncode == 0
    ids = {n["data"]["task_id"]: n["data"]["status"] for n in
           client.get("/notifications").get_json() if n["name"] == "task_progress"}
    assert ids == {first.id: "finished", second.id: "finished"}


def test_the_user_row_and_posts_are_untouched_by_an_export(app, client, smtp_server):
    make_user(posts=TRICKY_BODIES)
    login(client)
    _export(client)
    assert run_worker_burst().returncode == 0
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(Post.id))) == len(TRICKY_BODIES)
    assert db.session.scalar(sa.select(User).where(User.username == "susan")) is not None


@pytest.mark.parametrize("bodies", [[], ["one"]])
def test_get_progress_is_100_only_when_finished(app, bodies, smtp_server):
    user = make_user(posts=bodies)
    task = user.launch_task("export_posts", "Exporting posts...")
    assert task.get_progress() == 0
    assert run_worker_burst().returncode == 0
    assert _task(task.id).get_progress() == 100


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return "X"


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_killed_work_horse_is_recorded_and_retried_by_its_worker(app, client, smtp_server):
    """The out-of-memory case: the process running the job dies, its worker lives on."""
    app.config["MAIL_RETRY_INTERVALS"] = [0]  # requeue at once: this worker has no scheduler
    user = make_user()
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(100000)])
    db.session.commit()
    login(client)
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=10),
                          args=["-w", "app.jobs.worker.AppWorker"])
    try:
        _export(client)
        wait_for(lambda: _task().status == TaskStatus.RUNNING and _task().progress > 0,
                 interval=0.05, message="export to be running")
        [horse] = wait_for(lambda: children_of(worker.pid), message="work horse")
        os.kill(horse, signal.SIGKILL)
        wait_for(lambda: _task().attempts >= 2, message="the retry to start")
        wait_for(lambda: _task().complete, timeout=120, message="retry to finish")
    finally:
        log = _stop(worker)
    task = _task()
    assert task.status == TaskStatus.FINISHED, log
    assert "Work-horse terminated unexpectedly" in log
    assert len(smtp_server.handler_ref.messages) == 1


def test_a_dead_attempts_unfinished_mail_claim_is_released_but_a_sent_mark_kept(app):
    from app.jobs import failures, lifecycle

    user = make_user()
    first = user.launch_task("export_posts", "Exporting posts...")
    app.redis.set(f"microblog:mail-sent:{first.id}", "sending")
    lifecycle.record_failure(first.id, failures.WorkHorseKilled(), will_retry=True)
    assert app.redis.get(f"microblog:mail-sent:{first.id}") is None
    assert _task(first.id).status == TaskStatus.QUEUED

    app.redis.set(f"microblog:mail-sent:{first.id}", "sent")
    lifecycle.record_failure(first.id, failures.WorkHorseKilled(), will_retry=True)
    assert app.redis.get(f"microblog:mail-sent:{first.id}") == b"sent"


def test_a_job_rq_failed_without_calling_back_ends_failed_with_no_retry_promise(app, client):
    user = make_user()
    login(client)
    task = user.launch_task("export_posts", "Exporting posts...")
    task.error = "The mail server could not be reached. Retrying automatically."
    db.session.commit()
    rq.job.Job.fetch(task.id, connection=app.redis).set_status("failed")
    client.get("/notifications")
    task = _task(task.id)
    assert task.status == TaskStatus.FAILED
    assert task.error == "The mail server could not be reached."
