"""Faults with real servers (issue 8): Redis restarted mid-queue, PostgreSQL restarted mid-export,
the mail server down for two minutes, a web process killed under load, the export folder full or
unwritable. Each test starts its own servers and tears them down, even when it fails.
docs/reliability.md says what each one promises."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db
from app.models import Post, Task, TaskStatus, User
from tests.conftest import csrf_token, login, make_user, start_worker, wait_for, worker_env
from tests.test_tasks import _stop

EXPORT_SUBJECT = "[Microblog] Your blog posts"


# --------------------------------------------------------------------------- helpers

def _tasks() -> dict[str, Task]:
    db.session.expire_all()
    return {t.user.username: t for t in db.session.scalars(sa.select(Task))}


def _bulk_posts(user: User, count: int) -> None:
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(count)])
    db.session.commit()


def _mails_by_recipient(messages, subject: str = EXPORT_SUBJECT) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        if message["Subject"] == subject:
            counts[message["To"]] = counts.get(message["To"], 0) + 1
    return counts


def assert_tasks_truthful(tasks: dict[str, Task], messages) -> None:
    """Every task ended; a finished export mailed its user exactly once, a failed one never,
    and says why."""
    mails = _mails_by_recipient(messages)
    for username, task in tasks.items():
        assert task.complete and task.status in TaskStatus.TERMINAL, (username, task.status)
        address = f"{username}@example.com"
        if task.status == TaskStatus.FINISHED:
            assert mails.get(address) == 1, (username, mails)
        else:
            assert address not in mails, (username, task.status, mails)
            assert task.error and "Retrying" not in task.error, (username, task.error)


def in_own_app_context(function):
    """Run `function` in a thread: its requests get an app context (and flask-login user) of
    their own, not the test's, which every request in the test's thread shares."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result(timeout=60)


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
        wait_for(lambda: self._answers(client), timeout=20, message="redis-server to answer")
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


# --------------------------------------------------------------------------- Redis restarted

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


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_redis_restarted_with_jobs_queued_and_one_running_loses_nothing(
        private_redis, smtp_server, app, client, how):
    ana = make_user("ana")
    _bulk_posts(ana, 30_000)
    others = [make_user(name, posts=[f"{name}'s post"]) for name in ("bob", "cat", "dan")]
    make_user("eve")
    login(client, "ana")
    ana.launch_task("export_posts", "Exporting posts...")
    for user in others:
        user.launch_task("export_posts", "Exporting posts...")
    assert app.task_queue.count == 4

    # One worker: ana's export runs, the three others wait in the queue.
    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=10))
    try:
        wait_for(lambda: _tasks()["ana"].status == TaskStatus.RUNNING
                 and _tasks()["ana"].progress > 0, timeout=60, interval=0.05,
                 message="ana's export to be running")
        assert all(_tasks()[u.username].status == TaskStatus.QUEUED for u in others)
        private_redis.stop(signal.SIGTERM if how == "graceful" else signal.SIGKILL)
        _pages_answer_while_redis_is_down(app, client)
        time.sleep(2)
        private_redis.start()
        wait_for(lambda: all(t.complete for t in _tasks().values()), timeout=240,
                 interval=0.5, message="every task to end")
    finally:
        log = _stop(worker)
        print(log, private_redis.log())
    tasks = _tasks()
    assert_tasks_truthful(tasks, smtp_server.handler_ref.messages)
    assert all(tasks[u.username].status == TaskStatus.FINISHED for u in others), log
    # ana's export was cut off by the restart and ran again: one mail all the same.
    assert tasks["ana"].status == TaskStatus.FINISHED, (tasks["ana"].error, log)
    assert tasks["ana"].attempts >= 2, log
    assert tasks["eve"].status == TaskStatus.FAILED  # asked while Redis was down
