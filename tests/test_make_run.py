"""`make run` as the README promises it: one foreground process group (honcho reading
Procfile.dev) that starts the embedded Redis, an RQ worker and gunicorn, serves the app at the
URL it prints, and stops completely on one Ctrl-C.

The install steps of `make run` are not repeated here (they would reinstall the project); the
test runs the process group that the Makefile's `run` target starts, with the command taken
from the Makefile itself, in a temporary instance folder so the embedded Redis socket and the
SQLite database live there and every process it starts can be recognised by that path."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

# Its own SQLite and Redis whatever the matrix says: once per CI run is enough.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 120  # the issue: the login page within two minutes of starting
STOP_TIMEOUT = 20


def honcho_command() -> list[str]:
    """The honcho command of `make run` when REDIS_URL is unset (the embedded Redis)."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"honcho -f (\S+) start ([a-z ]+?)\s*;", makefile)
    assert match, "the Makefile's run target no longer starts honcho"
    procfile, processes = match.group(1), match.group(2).split()
    assert {"redis", "worker", "web", "cron"} <= set(processes), processes
    return [str(BIN / "honcho"), "-f", procfile, "start", *processes]


def run_env(instance: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "MAIL_SERVER", "MAIL_PORT", "MAIL_RETRY_INTERVALS",
                        "TASK_HEARTBEAT_GRACE", "GUNICORN_BIND", "WEB_CONCURRENCY",
                        "MICROBLOG_HOST", "PYTEST_CURRENT_TEST"}}
    env.update(
        PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
        FLASK_APP="microblog.py",
        MICROBLOG_INSTANCE=str(instance),
        REDIS_URL=f"unix://{instance}/redis.sock",  # what the Makefile exports
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    return env


def processes_of(marker: str) -> dict[int, str]:
    """Every live process whose environment or command line mentions `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X"):
            continue  # already dead, waiting to be reaped
        if marker.encode() in environ or marker.encode() in cmdline:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port`, as the kernel lists them."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            # The kernel prints the address as 32-bit words in host byte order.
            raw = b"".join(struct.pack("=I", int(address[i:i + 8], 16))
                           for i in range(0, len(address), 8))
            found.add(socket.inet_ntop(family, raw))
    return found


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def wrong_port(port: int) -> list[int]:
    """The ports honcho hands to the 2nd and 3rd process types, where the web app answers
    when `web` is not first in the Makefile's `honcho start` list."""
    return [p for p in (port + 100, port + 200)
            if get(f"http://127.0.0.1:{p}/auth/login", timeout=2)[0] == 200]


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def busy_worker(redis_url: str, seconds: int = 60) -> None:
    """Give the worker a job that runs for a while without touching Redis (like an export
    waiting on a slow mail server), and wait until its work horse has started it. On the bulk
    queue, as an export is: the pool, which also takes microblog-tasks, never runs it."""
    import rq
    from redis import Redis

    with Redis.from_url(redis_url) as connection:
        job = rq.Queue("microblog-bulk", connection=connection).enqueue(
            "time.sleep", seconds, job_timeout=seconds + 60)
        deadline = time.monotonic() + 120
        while job.get_status() != "started":
            assert time.monotonic() < deadline, f"the job did not start: {job.get_status()}"
            time.sleep(0.1)
        connection.connection_pool.disconnect()


# An export past its retention, with its file, put in the instance before `make run` starts:
# the cron process must have it expired (file gone, row marked) soon after the start.
DUE_EXPORT = """
from datetime import timedelta
from app import create_app, db
from app.exports.storage import get_storage
from app.models import Export, User, utcnow
app = create_app()
with app.app_context():
    user = User(username="olga", email="olga@example.com")
    db.session.add(user)
    db.session.flush()
    export = Export(user_id=user.id, format="json", filename="posts.json",
                    storage_key=f"{user.id}/due/posts.json",
                    finished_at=utcnow() - timedelta(days=8),
                    expires_at=utcnow() - timedelta(days=1))
    with get_storage().writer(export.storage_key) as out:
        out.write(b'{"posts": []}')
    db.session.add(export)
    db.session.commit()
    print(export.id, get_storage().path(export.storage_key))
"""


def expired_at(instance: Path, export_id: str) -> str | None:
    import sqlite3

    with sqlite3.connect(instance / "app.db") as conn:
        return conn.execute("SELECT expired_at FROM export WHERE id = ?",
                            (export_id,)).fetchone()[0]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "job-running"])
def test_make_run_serves_and_one_ctrl_c_stops_everything(busy):
    instance = Path(tempfile.mkdtemp(prefix="microblog-make-run-"))
    marker = str(instance)
    port = free_port(100, 200)  # honcho numbers ports by hundreds
    env = run_env(instance, port)
    log = instance / "honcho.log"
    honcho = None
    try:
        upgrade = subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        assert (instance / "app.db").exists(), "the database is not under the instance folder"
        seeded = subprocess.run([sys.executable, "-c", DUE_EXPORT], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        due_id, due_file = seeded.stdout.split()
        assert Path(due_file).is_file()

        started = time.monotonic()
        with log.open("wb") as out:
            # Its own process group, like a shell's foreground job: Ctrl-C goes to that group.
            honcho = subprocess.Popen(honcho_command(), cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = started + START_TIMEOUT
        login = health = None
        while time.monotonic() < deadline:
            assert honcho.poll() is None, f"honcho exited early:\n{tail(log)}"
            if login != 200:
                login = get(base + "/auth/login")[0]
                if login != 200 and wrong_port(port):
                    break
            if login == 200:
                status, body = get(base + "/health")
                if status == 200:
                    health = json.loads(body)
                    if health.get("workers", 0) >= 1:
                        break
            time.sleep(0.25)
        if health is None or health.get("workers", 0) < 1:
            elsewhere = wrong_port(port)
            raise AssertionError(
                f"`make run` is not serving at {base} (the URL it prints) with a worker, "
                f"{time.monotonic() - started:.0f}s after starting: login={login} "
                f"health={health}"
                + (f"; the web app answers on port(s) {elsewhere} instead: honcho gives each "
                   "process type its own PORT (+100 per position in the `start` list), so "
                   "`web` must come first in the Makefile's `honcho start` list"
                   if elsewhere else "")
                + f"\n{tail(log)}")
        ready = time.monotonic() - started
        print(f"make run: ready in {ready:.1f}s (health {health})")

        # Loopback only: nobody else on the network reaches the development server.
        assert listening_addresses(port) == {"127.0.0.1"}, listening_addresses(port)

        running = processes_of(marker)
        names = " | ".join(running.values())
        assert "redis-server" in names and "rq worker" in names and "gunicorn" in names, running
        assert "rq cron" in names, running
        assert (instance / "redis.sock").exists(), "the embedded Redis is not in the instance"
        # The cron process enqueues the expiry as it starts; a worker runs it.
        deadline = time.monotonic() + 120
        while expired_at(instance, due_id) is None:
            assert time.monotonic() < deadline, f"the due export never expired:\n{tail(log)}"
            time.sleep(0.25)
        assert not Path(due_file).exists(), "the expired export's file is still there"
        if busy:
            busy_worker(env["REDIS_URL"])

        # One Ctrl-C: SIGINT to the foreground process group (honcho and its helpers).
        stop_started = time.monotonic()
        os.killpg(honcho.pid, signal.SIGINT)
        try:
            honcho.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"honcho still running {STOP_TIMEOUT}s after Ctrl-C:\n"
                                 f"{processes_of(marker)}\n{tail(log)}") from None
        left = processes_of(marker)
        while left and time.monotonic() - stop_started < STOP_TIMEOUT:
            time.sleep(0.2)
            left = processes_of(marker)
        stopped = time.monotonic() - stop_started
        print(f"make run: everything stopped {stopped:.1f}s after Ctrl-C "
              f"(honcho rc={honcho.returncode})")
        assert not left, f"processes left behind after Ctrl-C: {left}\n{tail(log)}"
        assert get(base + "/auth/login", timeout=2)[0] == 0, "the web server still answers"
        # A clean stop: the worker and the web app did not fail on a vanished Redis.
        shutdown = log.read_text(errors="replace").split("SIGINT received", 1)[1]
        assert "Traceback" not in shutdown and "could not connect" not in shutdown, shutdown
        if busy:
            assert "cold shut down" in shutdown, shutdown
    finally:
        if honcho is not None and honcho.poll() is None:
            try:
                os.killpg(honcho.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            honcho.wait(timeout=10)
        for pid in processes_of(marker):  # only processes started for this test's instance
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(instance, ignore_errors=True)


def make_exported(name: str, **env: str) -> str:
    """The value of an environment variable in the processes `make run` starts, with these
    settings in make's own environment."""
    clean = {k: v for k, v in os.environ.items()
             if k not in {"PUBLIC_BASE_URL", "MICROBLOG_HOST", "PORT"}}
    printed = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", f'print-it: ; @echo "$${name}"',
         "print-it"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
        timeout=30)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout.strip()


@pytest.mark.parametrize("env, expected", [
    ({}, "http://127.0.0.1:5000"),
    ({"PORT": "8123"}, "http://127.0.0.1:8123"),
    ({"MICROBLOG_HOST": "0.0.0.0", "PORT": "8123"}, "http://127.0.0.1:8123"),
    ({"MICROBLOG_HOST": "192.0.2.7"}, "http://192.0.2.7:5000"),
    ({"MICROBLOG_HOST": "::1"}, "http://[::1]:5000"),
    ({"PUBLIC_BASE_URL": "https://blog.example.org", "PORT": "8123"}, "https://blog.example.org"),
], ids=["default", "port", "all-addresses", "host", "ipv6", "set"])
def test_make_run_links_in_mail_point_at_its_own_address_unless_told(env, expected):
    assert make_exported("PUBLIC_BASE_URL", **env) == expected


@pytest.mark.timeout(600)
def test_make_run_listens_where_MICROBLOG_HOST_says(redis_server):
    """MICROBLOG_HOST moves the web server (127.0.0.2: another loopback address, so that the
    test itself opens nothing to the network)."""
    instance = Path(tempfile.mkdtemp(prefix="microblog-make-run-"))
    port = free_port(100, 200)  # honcho numbers ports by hundreds
    env = run_env(instance, port)
    env.update(REDIS_URL=redis_server, MICROBLOG_HOST="127.0.0.2")
    log = instance / "honcho.log"
    command = honcho_command()
    web_only = [*command[:command.index("start") + 1], "web"]
    honcho = None
    try:
        with log.open("wb") as out:
            honcho = subprocess.Popen(web_only, cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        deadline = time.monotonic() + 120
        while not listening_addresses(port):
            assert honcho.poll() is None, f"honcho exited early:\n{tail(log)}"
            assert time.monotonic() < deadline, f"gunicorn never listened:\n{tail(log)}"
            time.sleep(0.2)
        assert listening_addresses(port) == {"127.0.0.2"}
        assert get(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 0  # refused
    finally:
        if honcho is not None:
            os.killpg(honcho.pid, signal.SIGINT)
            try:
                honcho.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait(timeout=10)
        for pid in processes_of(str(instance)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(instance, ignore_errors=True)
