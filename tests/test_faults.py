"""Faults with real servers (issue 8): Redis restarted mid-queue, PostgreSQL restarted mid-export,
the mail server down for two minutes, a web process killed under load, the export folder full or
unwritable. Each test starts its own servers and tears them down, even when it fails.
docs/reliability.md says what each one promises."""

from __future__ import annotations

import os
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
        survived = worker.poll() is None  # no supervisor needed to go on after the restart
    finally:
        log = _stop(worker)
        print(log, private_redis.log())
    assert survived, log
    tasks = _tasks()
    assert_tasks_truthful(tasks, smtp_server.handler_ref.messages)
    assert all(tasks[u.username].status == TaskStatus.FINISHED for u in others), log
    # ana's export was cut off by the restart and ran again: one mail all the same.
    assert tasks["ana"].status == TaskStatus.FINISHED, (tasks["ana"].error, log)
    assert tasks["ana"].attempts >= 2, log
    assert tasks["eve"].status == TaskStatus.FAILED  # asked while Redis was down
    resets = _mails_by_recipient(smtp_server.handler_ref.messages,
                                 "[Microblog] Reset Your Password")
    assert resets == {"bob@example.com": 1}


# --------------------------------------------------------------------------- PostgreSQL restarted

def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster of one test in a temp dir, on a free port of 127.0.0.1 with its
    Unix socket in the same dir. As root, its programs run as the `postgres` OS user (initdb
    refuses root)."""

    def __init__(self, bindir: Path) -> None:
        from tests.test_deployment import free_port

        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="mb-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/microblog"

    def run(self, program: str, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([*self.as_user, str(self.bindir / program), *args],
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{program} {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def pg_ctl(self, *args: str) -> str:
        return self.run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"),
                        "-w", "-t", "60", *args)

    def create(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self.pg_ctl("-o", options, "start")
        self.run("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres",
                 "microblog")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def private_postgres(config_overrides, monkeypatch):
    """A private PostgreSQL with the schema built by the migrations; the app in this process
    and every worker the test starts use it. Stopped at teardown whatever happens."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql; CI has them)")
    server = PrivatePostgres(bindir)
    try:
        server.create()
        from config import database_url
        from tests.conftest import ROOT, _test_config

        uri = database_url(server.url)
        from app import create_app

        with create_app(_test_config(SQLALCHEMY_DATABASE_URI=uri)).app_context():
            from flask_migrate import upgrade

            upgrade(directory=str(ROOT / "migrations"))
            db.engine.dispose()
        config_overrides["SQLALCHEMY_DATABASE_URI"] = uri
        monkeypatch.setenv("DATABASE_URL", server.url)
        yield server
    finally:
        db.session.remove()
        server.destroy()


def _backend_pid() -> int:
    return db.session.scalar(sa.text("SELECT pg_backend_pid()"))


def test_postgres_restarted_mid_export_retries_it_and_the_web_recovers(
        private_postgres, smtp_server, app, client):
    app.config["MAIL_RETRY_INTERVALS"] = [2, 5, 10]  # the export's retries outlast a restart
    ana = make_user("ana")
    db.session.execute(sa.text(
        "INSERT INTO post (body, timestamp, user_id, language) "
        "SELECT 'post ' || g, TIMESTAMP '2020-01-01' + g * INTERVAL '1 second', :user, 'en' "
        "FROM generate_series(1, 50000) AS g"), {"user": ana.id})
    db.session.commit()
    login(client, "ana")
    assert client.get("/index").status_code == 200
    pid_before = _backend_pid()  # the pool keeps this connection for the next request
    db.session.remove()

    worker = start_worker(env=worker_env(EXPORT_BATCH_SIZE=20))
    try:
        token = csrf_token(client, "/user/ana")
        assert client.post("/export_posts", data={"csrf_token": token}).status_code == 302
        wait_for(lambda: _tasks()["ana"].status == TaskStatus.RUNNING
                 and _tasks()["ana"].progress > 0, timeout=60, interval=0.05,
                 message="the export to be running")
        db.session.remove()
        private_postgres.pg_ctl("-m", "fast", "restart")
        # The web's pooled connection died with the server: the next request still works.
        assert client.get("/index").status_code == 200
        assert client.get("/notifications").status_code == 200
        assert _backend_pid() != pid_before
        wait_for(lambda: _tasks()["ana"].complete, timeout=180, interval=0.5,
                 message="the export to end")
    finally:
        log = _stop(worker)
        print(log, private_postgres.log())
    task = _tasks()["ana"]
    assert_tasks_truthful({"ana": task}, smtp_server.handler_ref.messages)
    assert task.status == TaskStatus.FINISHED, (task.error, log)
    assert task.attempts >= 2, log
    [mail] = smtp_server.handler_ref.messages
    import json

    from tests.test_tasks import _attachment

    assert len(json.loads(_attachment(mail).get_content())["posts"]) == 50_000


# --------------------------------------------------------------------------- disk full / unwritable

@pytest.fixture
def tiny_mount():
    """mount(8) a filesystem of one test at a fresh directory (root only); unmounted after."""
    mounted: list[Path] = []

    def mount(*options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        point = Path(tempfile.mkdtemp(prefix="mb-mnt-"))
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                                 str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            point.rmdir()
            pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def _export_folder(kind: str, tiny_mount, tmp_path: Path) -> tuple[Path, str]:
    """An export folder that fails as `kind` says, and the reason the user must read."""
    if kind == "disk full":
        return tiny_mount("size=256k"), "The server ran out of disk space."
    if kind == "read-only":
        return tiny_mount("size=1m", "ro"), "The server could not write the export file."
    blocker = tmp_path / "not-a-folder"  # fails for root too (ENOTDIR), unlike permissions
    blocker.write_text("a regular file")
    return blocker / "exports", "The server could not write the export file."


@pytest.mark.parametrize("kind", ["disk full", "read-only", "under a file"])
def test_an_export_folder_that_cannot_take_the_file_fails_the_export_readably(
        smtp_server, app, client, tiny_mount, tmp_path, kind):
    from tests.conftest import run_worker_burst

    folder, reason = _export_folder(kind, tiny_mount, tmp_path)
    ana = make_user("ana")
    _bulk_posts(ana, 10_000)  # about 600 kB of JSON: more than the 256 kB disk
    login(client, "ana")
    token = csrf_token(client, "/user/ana")
    assert client.post("/export_posts", data={"csrf_token": token}).status_code == 302
    result = run_worker_burst(env=worker_env(EXPORT_FOLDER=folder, EXPORT_BATCH_SIZE=500))
    assert result.returncode == 0, result.stderr

    task = _tasks()["ana"]
    assert task.status == TaskStatus.FAILED and task.error == reason, (task.error, result.stderr)
    assert task.attempts == 1  # not retried: it would only fail again
    assert smtp_server.handler_ref.messages == []
    if folder.is_dir():
        assert list(folder.iterdir()) == []  # no partial file left behind
    # The user reads the reason in the page's task alert and in the polled JSON.
    assert reason in client.get("/user/ana").get_data(as_text=True)
    [note] = [n["data"] for n in client.get("/notifications").get_json()
              if n["name"] == "task_progress"][-1:]
    assert note["status"] == "failed" and note["error"] == reason


# --------------------------------------------------------------------------- SMTP down 2 minutes

class RestartableSMTP:
    """An aiosmtpd server on a fixed port that can go away and come back on it."""

    def __init__(self) -> None:
        from tests.conftest import _Collector
        from tests.test_deployment import free_port

        self.handler = _Collector()
        self.port = free_port()
        self.controller = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def restartable_smtp(config_overrides, monkeypatch):
    server = RestartableSMTP()
    config_overrides.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=server.port)
    monkeypatch.setenv("MAIL_SERVER", "127.0.0.1")
    monkeypatch.setenv("MAIL_PORT", str(server.port))
    yield server
    server.stop()


SMTP_OUTAGE = 120  # seconds


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mail_server_down_two_minutes_then_each_mail_arrives_once(restartable_smtp, app, client):
    """Exports and password-reset mails asked for while the mail server is down are retried
    (MAIL_RETRY_INTERVALS 20, 40, 80 s span the outage) and each arrives exactly once."""
    app.config["MAIL_RETRY_INTERVALS"] = [20, 40, 80]
    users = [make_user(name, posts=[f"{name}'s post"]) for name in ("ana", "bob")]
    for user in users:
        user.launch_task("export_posts", "Exporting posts...")
    for user in users:
        token = csrf_token(client, "/auth/reset_password_request")
        response = client.post("/auth/reset_password_request", data={
            "email": user.email, "csrf_token": token})
        assert response.status_code == 302
    worker = start_worker()
    down_since = time.monotonic()
    try:
        wait_for(lambda: all(t.status == TaskStatus.QUEUED and t.attempts >= 1
                             for t in _tasks().values()), timeout=60, interval=0.5,
                 message="both exports to fail once and wait for their retry")
        assert all(t.error == "The mail server could not be reached. Retrying automatically."
                   for t in _tasks().values())
        time.sleep(max(0.0, SMTP_OUTAGE - (time.monotonic() - down_since)))
        assert not any(t.complete for t in _tasks().values())
        restartable_smtp.start()
        wait_for(lambda: all(t.complete for t in _tasks().values()), timeout=180,
                 interval=1, message="both exports to end")
        wait_for(lambda: len(restartable_smtp.handler.messages) >= 4, timeout=120,
                 interval=1, message="the two password-reset mails")
        time.sleep(3)  # a duplicate would arrive now
    finally:
        log = _stop(worker)
        print(log)
    messages = restartable_smtp.handler.messages
    tasks = _tasks()
    assert all(t.status == TaskStatus.FINISHED for t in tasks.values()), log
    assert_tasks_truthful(tasks, messages)
    resets = _mails_by_recipient(messages, "[Microblog] Reset Your Password")
    assert resets == {"ana@example.com": 1, "bob@example.com": 1}, log
    assert len(messages) == 4


# --------------------------------------------------------------------------- web process killed

LOAD_USERS = 6
LOAD_ROUNDS = 25  # per user: read the home page, post, read explore


class LoadUser:
    """One logged-in person: a requests session that posts and reads, recording what each
    post request got back (a status, or the connection error)."""

    def __init__(self, base: str, name: str) -> None:
        import requests

        self.base, self.name = base, name
        self.session = requests.Session()
        self.posts: dict[str, str] = {}  # body -> "302" / "500" / "connection error"
        self.statuses: list[tuple[float, str, str]] = []  # (started, path, outcome)
        self.posting = False

    def request(self, method: str, path: str, **kwargs):
        import requests

        started = time.monotonic()
        try:
            response = self.session.request(method, self.base + path, timeout=30,
                                            allow_redirects=False, **kwargs)
        except requests.ConnectionError:
            self.statuses.append((started, path, "connection error"))
            return None
        self.statuses.append((started, path, str(response.status_code)))
        return response

    def token(self, path: str) -> str | None:
        from tests.conftest import CSRF

        response = self.request("GET", path)
        match = CSRF.search(response.text) if response is not None else None
        return (match.group(1) or match.group(2)) if match else None

    def log_in(self) -> None:
        response = self.request("POST", "/auth/login", data={
            "username": self.name, "password": "correct horse battery",
            "csrf_token": self.token("/auth/login")})
        assert response is not None and response.status_code == 302

    def run(self, rounds: int) -> None:
        for n in range(rounds):
            token = self.token("/index")
            if token is None:
                continue
            body = f"{self.name} post {n} " + "x" * 100 + " end"
            self.posting = True
            response = self.request("POST", "/index", data={"post": body, "csrf_token": token})
            self.posting = False
            self.posts[body] = "connection error" if response is None else str(
                response.status_code)
            self.request("GET", "/explore")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(300)
def test_a_web_worker_killed_under_load_others_serve_and_no_row_is_half_written(
        app, tmp_path):
    import threading

    from tests.test_deployment import Processes, free_port, healthy, wait_until

    port = free_port()
    names = [f"user{i}" for i in range(LOAD_USERS)]
    for name in names:
        make_user(name)
    db.session.remove()
    processes = Processes(tmp_path, worker_env(
        GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=2, GUNICORN_ACCESS_LOG=""))
    try:
        arbiter = processes.start("web", "exec gunicorn -c gunicorn.conf.py microblog:app")
        wait_until(lambda: processes.running("web") and healthy(port), 60,
                   lambda: f"gunicorn's /health\n{processes.logs()}")
        web_workers = wait_until(lambda: len(_children(arbiter.pid)) == 2 and
                                 _children(arbiter.pid), 30, "two gunicorn workers")
        users = [LoadUser(f"http://127.0.0.1:{port}", name) for name in names]
        for user in users:
            user.log_in()
        threads = [threading.Thread(target=user.run, args=(LOAD_ROUNDS,)) for user in users]
        for thread in threads:
            thread.start()
        planned = LOAD_USERS * LOAD_ROUNDS * 3
        wait_until(lambda: sum(len(u.statuses) for u in users) > planned // 3, 120,
                   "a third of the load")
        # Kill while posts are being written (on this worker or the other, by chance).
        wait_until(lambda: any(u.posting for u in users), 30, "a post in flight",
                   interval=0.001)
        victim = web_workers[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        for thread in threads:
            thread.join(timeout=240)
        assert not any(thread.is_alive() for thread in threads)
        # The arbiter replaced the dead worker.
        replaced = wait_until(lambda: len(_children(arbiter.pid)) == 2
                              and victim not in _children(arbiter.pid), 30, "a new worker")
        assert replaced and processes.running("web")
        after = [u.request("GET", "/explore") for u in users]
        assert all(r is not None and r.status_code == 200 for r in after)
    finally:
        log = processes.log("web", 60)
        processes.stop_all()

    outcomes = [outcome for u in users for _, _, outcome in u.statuses]
    assert not [o for o in outcomes if o.startswith("5")], log
    broken = [(started, path) for u in users for started, path, outcome in u.statuses
              if outcome == "connection error"]
    # Only requests that were in flight on the killed process may break.
    assert all(started < killed_at for started, _ in broken), (broken, killed_at)
    # Every post in the database is whole, is its author's, and answers a request that was
    # accepted (302: exactly once) or whose connection broke (at most once).
    rows = db.session.execute(sa.select(User.username, Post.body).join(Post.author)).all()
    stored: dict[str, list[str]] = {}
    for username, body in rows:
        stored.setdefault(body, []).append(username)
    sent = {body: (u.name, outcome) for u in users for body, outcome in u.posts.items()}
    assert set(stored) <= set(sent), set(stored) - set(sent)
    for body, (author, outcome) in sent.items():
        if outcome == "302":
            assert stored.get(body) == [author], (body, stored.get(body))
        else:
            assert outcome == "connection error" and stored.get(body, [author]) == [author]
    in_flight_posts = [b for b, (_, o) in sent.items() if o == "connection error"]
    print(f"{len(outcomes)} requests, {len(broken)} broken by the kill "
          f"({len(in_flight_posts)} posts, {sum(b in stored for b in in_flight_posts)} saved)")
