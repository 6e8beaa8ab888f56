"""Fixtures: a real Redis (embedded redis-server, or MICROBLOG_TEST_REDIS_URL), a real database
(SQLite, or MICROBLOG_TEST_DATABASE_URL: PostgreSQL/MariaDB in CI), the schema built by the
migrations, real RQ workers (in-process SimpleWorker or `rq worker --burst` subprocesses) and a
real SMTP server (aiosmtpd)."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_tmp = Path(tempfile.mkdtemp(prefix="microblog-tests-"))

# Configuration comes from the environment; it must be in place before `config` is imported,
# and worker subprocesses inherit it.
os.environ["MICROBLOG_INSTANCE"] = str(_tmp / "instance")
os.environ["DATABASE_URL"] = os.environ.get("MICROBLOG_TEST_DATABASE_URL") or (
    "sqlite:///" + str(_tmp / "test.db"))
os.environ["REDIS_URL"] = os.environ.get("MICROBLOG_TEST_REDIS_URL") or (
    "unix://" + str(_tmp / "redis.sock"))
os.environ["MAIL_RETRY_INTERVALS"] = "1,1,1"
os.environ["TASK_HEARTBEAT_GRACE"] = "2"
os.environ.pop("MAIL_SERVER", None)
os.environ["FLASK_APP"] = "microblog.py"
# Jobs at normal CPU priority, not the default idle: CI runs a second suite beside this one,
# and jobs that yield to every other program would wait for it (tests/test_worker_priority.py
# checks the default and each setting).
os.environ["WORKER_CPU_PRIORITY"] = "normal"
sys.path.insert(0, str(ROOT))

from config import Config  # noqa: E402

# Workers import app.tasks, which builds the worker's app and pushes its context when none is
# active. Import it now, outside any test, so an in-process worker never pushes one mid-test.
importlib.import_module("app.tasks")


def _fast_password_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="pbkdf2:sha256:1000")


# The suite sets and checks passwords thousands of times; werkzeug's default (scrypt, what
# production keeps) costs ~0.17 s of CPU each, minutes per run. Checking reads the method from
# the stored hash, so logins work the same. Processes the tests start (gunicorn, benches) keep
# the default.
importlib.import_module("app.models").generate_password_hash = _fast_password_hash

WORKER_ARGS = ["-w", "app.jobs.worker.AppWorker", "--connection-class",
               "app.redis_connection.Redis", "--with-scheduler"]
# Every queue, in the order the shipped worker commands list them (config.JOB_QUEUES).
QUEUES = list(Config.JOB_QUEUES)


# How long to wait for something that is bound to happen (a mail, a row, a log line, a
# worker registering). Generous: on a machine that is busy with other work a process can take
# a minute to start; on an idle one the wait ends as soon as it happens.
EVENT_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis server for the whole run; emptied before each test by `app`."""
    url = os.environ["REDIS_URL"]
    proc = None
    if not os.environ.get("MICROBLOG_TEST_REDIS_URL"):
        from app.embedded_redis import server_args

        socket_path = url[len("unix://"):]
        proc = subprocess.Popen(server_args(socket_path, str(_tmp)), stdout=subprocess.DEVNULL)
        from app.embedded_redis import wait

        wait(url, timeout=EVENT_TIMEOUT)
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def database(redis_server):
    """The schema, built by running the migrations from an empty database."""
    from app import create_app, db

    app = create_app(config_for_tests())
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        from flask_migrate import upgrade

        upgrade(directory=str(ROOT / "migrations"))
    yield os.environ["DATABASE_URL"]


def config_for_tests(**overrides):
    attrs = dict(
        TESTING=True,
        SERVER_NAME="localhost.localdomain",
        SQLALCHEMY_DATABASE_URI=Config.SQLALCHEMY_DATABASE_URI,
        REDIS_URL=os.environ["REDIS_URL"],
        MAIL_SERVER=None,
        MAIL_SUPPRESS_SEND=False,
        MAIL_RETRY_INTERVALS=[1, 1, 1],
        TASK_HEARTBEAT_GRACE=2,
        POSTS_PER_PAGE=3,
        # The suite logs in many times; tests/test_rate_limits.py turns the limits on.
        RATELIMIT_ENABLED=False,
        # A GET /events from the sweeps (test_authz, test_fuzz) ends at once; tests of the
        # stream itself (test_events.py) keep it open.
        EVENTS_MAX_AGE=0.2,
    )
    attrs.update(overrides)
    return type("TestConfig", (Config,), attrs)


@pytest.fixture
def config_overrides():
    """Tests may put settings here before `app` is created."""
    return {}


@pytest.fixture
def app(database, redis_server, config_overrides):
    from app import create_app, db

    app = create_app(config_for_tests(**config_overrides))
    with app.app_context():
        empty_database(db)
        app.redis.flushdb()
        for folder in ("outbox", "exports"):
            path = Path(app.instance_path) / folder
            if path.exists():
                for f in path.iterdir():  # exports: <user id>/<export id>/<file>
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
        yield app
        db.session.remove()


def empty_database(db):
    db.session.remove()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def client(app):
    return app.test_client()


def browser(app):
    """A test client whose every request runs in an app context of its own (its own `g`,
    current_user and db.session), as in a real server. The `client` fixture's requests share
    the test's context, so two clients of it would see each other's logged-in user."""
    from flask.testing import FlaskClient

    class Browser(FlaskClient):
        def open(self, *args, **kwargs):
            with app.app_context():
                return super().open(*args, **kwargs)

    return Browser(app, app.response_class, use_cookies=True)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# --------------------------------------------------------------------------- helpers

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                  r'name="csrf_token" value="([^"]+)"')


def csrf_token(client, url="/auth/login") -> str:
    html = client.get(url).get_data(as_text=True)
    match = CSRF.search(html)
    assert match, f"no CSRF token on {url}"
    return match.group(1) or match.group(2)


def make_user(username="susan", email=None, password="correct horse battery", posts=()):
    from app import db
    from app.models import Post, User

    user = User(username=username, email=email or f"{username}@example.com")
    user.set_password(password)
    db.session.add(user)
    for body in posts:
        db.session.add(Post(body=body, author=user))
    db.session.commit()
    return user


def login(client, username="susan", password="correct horse battery"):
    token = csrf_token(client, "/auth/login")
    response = client.post("/auth/login", data={
        "username": username, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


@pytest.fixture
def user(app):
    return make_user()


@pytest.fixture
def logged_in(client, user):
    login(client)
    return client


def run_jobs_in_process(app) -> None:
    """Drain the queue with RQ's SimpleWorker in this process (fast unit tests)."""
    from rq.worker import SimpleWorker

    from app.jobs.worker import PromptExit

    class InProcessWorker(PromptExit, SimpleWorker):
        pass

    InProcessWorker(list(app.job_queues.values()), connection=app.redis).work(burst=True)


def queues_on(app, connection) -> None:
    """Every job queue of `app` (app.task_queue, the tutorial's, among them) on `connection`:
    a Redis that is not there, for the web's view of an outage."""
    import rq

    app.job_queues = {name: rq.Queue(name, connection=connection) for name in app.job_queues}
    app.task_queue = app.job_queues[app.config["TASK_QUEUE"]]


def worker_env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


# Plain `rq worker` (RQ's own Worker) may spend 60 s on its way out: app.jobs.worker.PromptExit.
def run_worker_burst(timeout=60 + EVENT_TIMEOUT, env=None, args=None, queues=None
                     ) -> subprocess.CompletedProcess:
    """Run a real `rq worker --burst` process from the repo root until its queues are empty:
    AppWorker on every queue, or with `args`, on the tutorial's queue unless `queues` says."""
    queues = queues or (QUEUES if args is None else ["microblog-tasks"])
    cmd = [str(Path(sys.executable).parent / "rq"), "worker", "--burst", *(args or WORKER_ARGS),
           *queues]
    return subprocess.run(cmd, cwd=ROOT, env=env or worker_env(), timeout=timeout,
                          capture_output=True, text=True)


# The long-running processes tests start (start_worker, start_logged), in order. A test's own
# are ended when it ends, passed or failed (`no_process_outlives_its_test`): a worker left
# running would take the jobs of the later tests of this pytest process.
_started: list[subprocess.Popen] = []


def start_worker(env=None, args=None) -> subprocess.Popen:
    """A long-running real worker process (stop it with stop_process)."""
    cmd = [str(Path(sys.executable).parent / "rq"), "worker", *(args or WORKER_ARGS),
           "--job-monitoring-interval", "1", *QUEUES]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or worker_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _started.append(proc)
    return proc


def start_logged(cmd: list[str], env=None) -> subprocess.Popen:
    """A long-running process in its own session whose output goes to a file, never to a
    pipe: nobody reads a pipe while the process runs, and once its 64 KB are full the process
    blocks in its next log line (a busy pool worker logs a few lines per job). The output so
    far: `process_output(proc)`; stop it with stop_process."""
    log = tempfile.NamedTemporaryFile(prefix="process-", suffix=".log", dir=_tmp, delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or worker_env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log.close()
    proc.log_path = log.name
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """SIGKILL to the session of every process this test started that is still running
    (module-scoped fixtures start theirs before this fixture, and keep them)."""
    import signal

    first = len(_started)
    yield
    for proc in _started[first:]:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=EVENT_TIMEOUT)
    del _started[first:]


def process_output(proc: subprocess.Popen) -> str:
    """What a process started by start_logged (or with a pipe, once it has ended) printed."""
    if getattr(proc, "log_path", None):
        return Path(proc.log_path).read_text(errors="replace")
    return proc.stdout.read() if proc.stdout else ""


def stop_process(proc: subprocess.Popen, grace: float = 20) -> str:
    """Stop a process started in its own session (start_worker, gunicorn ...): SIGTERM to its
    group, SIGKILL after `grace` seconds. Returns what it printed.

    Even a killed process needs CPU time to exit (its memory is torn down in its own context),
    and a worker at WORKER_CPU_PRIORITY=idle gives its session the lowest weight: beside busy
    programs it may take many seconds to go, so the wait after the SIGKILL is EVENT_TIMEOUT."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=EVENT_TIMEOUT)
    return process_output(proc)


def wait_for(predicate, timeout=EVENT_TIMEOUT, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    if isinstance(message, tuple):  # (what, a function saying how far it got)
        message = f"{message[0]}: {message[1]()}"
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --------------------------------------------------------------------------- parallel runs
# `make test` runs the suite in pytest-xdist workers (and `make test-under-load` two suites at
# once). Each worker process imports this module, so it has its own mkdtemp instance folder,
# SQLite file and embedded Redis socket; what is shared by the machine (ports, the real
# Redis's database numbers, PostgreSQL database names) comes from the helpers below.

def xdist_worker_index() -> int:
    """0 for xdist's worker gw0 and for a run without xdist, 1 for gw1, ..."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


_ports_given: set[int] = set()


def free_port(*offsets: int) -> int:
    """A port on 127.0.0.1 that nothing listens on, and port + offset free too for each offset
    (honcho numbers its processes' ports by hundreds). Never the same one twice in a process.

    Each xdist worker draws from a block of its own below Linux's ephemeral range
    (32768-60999): a port from bind(0) is one the kernel may hand to a client connection, or
    to another worker's bind(0), before the server meant to listen on it has started."""
    import random
    import socket

    base = 20000 + (xdist_worker_index() % 12) * 1000
    start = random.randrange(1000)
    for step in range(1000):
        port = base + (start + step) % 1000
        wanted = [port + offset for offset in (0, *offsets)]
        if _ports_given.intersection(wanted):
            continue
        try:
            for candidate in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _ports_given.update(wanted)
        return port
    raise RuntimeError(f"no free port in {base}-{base + 999}")


def pytest_configure(config):
    # The matrix's servers hold one database and one Redis database for the whole run: test
    # processes side by side would empty each other's tables.
    shared = [name for name in ("MICROBLOG_TEST_DATABASE_URL", "MICROBLOG_TEST_REDIS_URL")
              if os.environ.get(name)]
    if shared and (config.getoption("numprocesses", None) or 0):
        raise pytest.UsageError(
            f"{' and '.join(shared)}: one database for every test process; run without "
            "xdist (-n 0; make test: PYTEST_WORKERS=0)")


# --------------------------------------------------------------------------- SMTP

class MailCollector:
    def __init__(self):
        self.messages = []
        self.fail_with = None  # e.g. "451 Try again later"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_with:
            return self.fail_with
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        return "250 Message accepted for delivery"


def serve_smtp(handler, config_overrides, monkeypatch):
    """Start a real SMTP server (aiosmtpd) with `handler` on a free local port, and point the
    app and worker processes at it. Returns the started controller (the caller stops it)."""
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    config_overrides.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    monkeypatch.setenv("MAIL_SERVER", "127.0.0.1")
    monkeypatch.setenv("MAIL_PORT", str(port))
    controller.port_number = port
    return controller


@pytest.fixture
def smtp_server(config_overrides, monkeypatch):
    """A real SMTP server (aiosmtpd) on a free local port; the app and worker processes are
    pointed at it. `.handler.messages` holds what it received."""
    handler = MailCollector()
    controller = serve_smtp(handler, config_overrides, monkeypatch)
    controller.handler_ref = handler
    yield controller
    controller.stop()


@pytest.fixture
def dead_smtp_port(config_overrides, monkeypatch):
    """A MAIL_SERVER address where nothing listens (connection refused)."""
    port = free_port()
    config_overrides.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    monkeypatch.setenv("MAIL_SERVER", "127.0.0.1")
    monkeypatch.setenv("MAIL_PORT", str(port))
    return port
