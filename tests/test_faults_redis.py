"""Fault: Redis (with its append-only file, as compose runs it) restarted while jobs are
queued and one runs. See docs/reliability.md."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from app.models import TaskStatus
from tests.conftest import csrf_token, login, make_user, start_worker, wait_for, worker_env
from tests.conftest import stop_process as _stop
from tests.faults import (
    assert_tasks_truthful,
    bulk_posts,
    in_own_app_context,
    mails_by_recipient,
    tasks_by_user,
)

# A Redis outage (its own Redis server); the database only records the tasks: CI
# runs it once (SQLite).
pytestmark = pytest.mark.once


class PrivateRedis:
    """A redis-server of one test, with append-only persistence as compose.yaml runs it, on a
    Unix socket in its own directory; restartable on the same data."""

    def __init__(self) -> None:
        from app.embedded_redis import redis_server_binary

        self.dir = Path(tempfile.mkdtemp(prefix="mb-redis-"))  # short: socket paths are
        self.socket = self.dir / "redis.sock"                   # limited to 107 bytes
        self.url = f"unix://{self.socket}"
        self.binary = redis_server_binary()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
             "--loglevel", "warning", "--logfile", str(self.dir / "redis.log")])
        from redis import Redis

        client = Redis.from_url(self.url)
        wait_for(lambda: self._answers(client), message="redis-server to answer")
        client.close()

    @staticmethod
    def _answers(client) -> bool:
        from redis.exceptions import RedisError

        try:
            return client.ping()
        except (RedisError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis's graceful shutdown (it flushes the append-only file);
        SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def private_redis(config_overrides, monkeypatch):
    """A private Redis for the app in this process and every worker started by the test."""
    server = PrivateRedis()
    server.start()
    config_overrides["REDIS_URL"] = server.url
    monkeypatch.setenv("REDIS_URL", server.url)
    yield server
    server.stop(signal.SIGKILL)
    import shutil

    shutil.rmtree(server.dir, ignore_errors=True)


def _pages_answer_while_redis_is_down(app, client) -> None:
    """Home, a profile, the notifications JSON (ana's export is in progress) and another
    user's export request: clear answers, never a 500."""
    for url in ("/index", "/user/ana", "/user/bob", "/explore", "/messages"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    response = client.get("/notifications")
    assert response.status_code == 200 and isinstance(response.get_json(), list)

    def eve_exports():
        eve = app.test_client()
        login(eve, "eve")
        token = csrf_token(eve, "/user/eve")
        return eve.post("/export_posts", data={"csrf_token": token}, follow_redirects=True)

    response = in_own_app_context(eve_exports)
    assert response.status_code == 200
    assert "Background jobs are unavailable right now" in response.get_data(as_text=True)

    def bob_forgot_his_password():  # the mail cannot be queued: it is sent at once
        anonymous = app.test_client()
        token = csrf_token(anonymous, "/auth/reset_password_request")
        return anonymous.post("/auth/reset_password_request", data={
            "email": "bob@example.com", "csrf_token": token}, follow_redirects=True)

    response = in_own_app_context(bob_forgot_his_password)
    assert response.status_code == 200
    assert "Check your email for the instructions" in response.get_data(as_text=True)


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_redis_restarted_with_jobs_queued_and_one_running_loses_nothing(
        private_redis, smtp_server, app, client, how):
    ana = make_user("ana")
    bulk_posts(ana, 30_000)
    others = [make_user(name, posts=[f"{name}'s post"]) for name in ("bob", "cat", "dan")]
    make_user("eve")
    login(client, "ana")
    ana.launch_task("export_posts", "Exporting posts...")
    for user in others:
        user.launch_task("export_posts", "Exporting posts...")
    assert app.job_queues["microblog-bulk"].count == 4  # exports wait in the bulk queue

    # One worker: ana's export runs, the three others wait in the queue.
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=10))
    try:
        wait_for(lambda: tasks_by_user()["ana"].status == TaskStatus.RUNNING
                 and tasks_by_user()["ana"].progress > 0, interval=0.05,
                 message="ana's export to be running")
        assert all(tasks_by_user()[u.username].status == TaskStatus.QUEUED for u in others)
        private_redis.stop(signal.SIGTERM if how == "graceful" else signal.SIGKILL)
        _pages_answer_while_redis_is_down(app, client)
        time.sleep(2)
        private_redis.start()
        wait_for(lambda: all(t.complete for t in tasks_by_user().values()), timeout=240,
                 interval=0.5, message="every task to end")
        survived = worker.poll() is None  # no supervisor needed to go on after the restart
    finally:
        log = _stop(worker)
        print(log, private_redis.log())
    assert survived, log
    tasks = tasks_by_user()
    assert_tasks_truthful(tasks, smtp_server.handler_ref.messages)
    assert all(tasks[u.username].status == TaskStatus.FINISHED for u in others), log
    # ana's export rode out the restart (the worker's Redis commands wait for Redis to come
    # back: app.redis_connection.ride_out_outages) or, cut off, ran again: one mail either way.
    assert tasks["ana"].status == TaskStatus.FINISHED, (tasks["ana"].error, log)
    assert tasks["eve"].status == TaskStatus.FAILED  # asked while Redis was down
    resets = mails_by_recipient(smtp_server.handler_ref.messages,
                                 "[Microblog] Reset Your Password")
    assert resets == {"bob@example.com": 1}


@pytest.mark.parametrize("horse", ["cut off", "done"])
def test_worker_that_loses_redis_while_watching_its_job_leaves_nothing_stale(
        app, smtp_server, monkeypatch, horse):
    """An outage longer than the worker rides out (about 40 s) ends RQ's watch of the work
    horse with a ConnectionError. AppWorker then retries a cut-off job, and in either case
    forgets the execution: RQ 3 would otherwise report the old job as this worker's current
    one (and ignore a stop-job command for the next). The outage is simulated at that one
    point; the worker, its work horse and Redis are real."""
    import redis
    from rq.registry import StartedJobRegistry

    from app import db
    from app.jobs.worker import AppWorker
    from app.models import Task

    task = make_user(posts=["hello"]).launch_task("export_posts", "Exporting posts...")

    def monitor_loses_redis(self, job, queue, execution):
        if horse == "done":
            wait_for(lambda: job.get_status() == "finished", interval=0.05,
                     message="the work horse to finish")
        raise redis.exceptions.ConnectionError("Redis went away (simulated)")

    monkeypatch.setattr(AppWorker, "monitor_work_horse", monitor_loses_redis)
    bulk = app.job_queues["microblog-bulk"]  # where exports wait
    worker = AppWorker([bulk], connection=app.redis)
    worker.work(burst=True, max_jobs=1)

    db.session.expire_all()
    task = db.session.get(Task, task.id)
    assert worker.get_current_job_id() is None and not worker.executions
    assert StartedJobRegistry(queue=bulk).get_job_ids(cleanup=False) == []
    if horse == "done":
        assert task.status == TaskStatus.FINISHED
    else:
        assert task.status == TaskStatus.QUEUED
        assert task.error == "The job queue was briefly unavailable. Retrying automatically."
        assert bulk.scheduled_job_registry.get_job_ids() == [task.id]
