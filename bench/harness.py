"""What every benchmark stands on: its own services in a temporary directory, the real worker
and web commands of `make run`, bulk test data, a small HTTP client, and the statistics and
output format (a table plus one `BENCH_JSON {...}` line).

Nothing here imports the app at module level: the app reads its configuration from the
environment when `config` is first imported, so `Services` sets the environment first.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUEUE = "microblog-tasks"
PASSWORD = "bench password 1234"
# Our own database on the machine's PostgreSQL; the bench never touches any other.
# MICROBLOG_BENCH_PG_DB names another one, for two benchmarks running at once.
POSTGRES_DB = os.environ.get("MICROBLOG_BENCH_PG_DB", "microblog_bench")
if not POSTGRES_DB.replace("_", "").isalnum():
    raise SystemExit("MICROBLOG_BENCH_PG_DB: letters, digits and _ only")
POSTGRES_URL = f"postgresql://postgres@127.0.0.1:5432/{POSTGRES_DB}"

# The commands of Procfile.dev (what `make run` starts), used when Procfile.dev cannot be read.
DEFAULT_WORKER_ARGS = ["rq", "worker", "-w", "app.jobs.worker.AppWorker", "--with-scheduler",
                       "--job-monitoring-interval", "10", "--maintenance-interval", "30",
                       "microblog-mail", QUEUE, "microblog-bulk"]
DEFAULT_WEB_ARGS = ["gunicorn", "-c", "gunicorn.conf.py", "microblog:app"]
PROPOSED_WORKER = "bench.proposed.ProposedWorker"


def procfile_command(process: str, pattern: str, default: list[str]) -> list[str]:
    """The command line of one Procfile.dev process, so the bench runs what `make run` runs."""
    try:
        text = (ROOT / "Procfile.dev").read_text()
    except OSError:
        return default
    for line in text.splitlines():
        if line.startswith(process + ":"):
            match = re.search(pattern, line)
            if match:
                return match.group(0).split()
    return default


def worker_command() -> list[str]:
    # Up to the last of its queues (mail first, the tutorial's, bulk last).
    return procfile_command("worker", r"rq worker [^&;|}]*?" + QUEUE + r"(?: microblog-[\w-]+)*",
                            DEFAULT_WORKER_ARGS)


PLAIN_WORKER_LABEL = ("plain rq worker (rq worker -u $REDIS_URL microblog-mail microblog-tasks "
                      "microblog-bulk)")


def plain_worker_command(redis_url: str) -> list[str]:
    """The tutorial's command, `rq worker -u $REDIS_URL microblog-tasks`, on every queue (mail
    and exports have their own): RQ's own worker and connection classes, so that nothing of
    ours is loaded before a job's work horse imports app.tasks (our connection class would
    import the app package in the worker)."""
    return ["rq", "worker", "-u", redis_url, "microblog-mail", QUEUE, "microblog-bulk"]


def web_command() -> list[str]:
    return procfile_command("web", r"gunicorn [^&;|}]*?microblog:app", DEFAULT_WEB_ARGS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- SMTP

@dataclass
class Mail:
    received: float  # time.perf_counter() when the server accepted it
    recipients: list[str]
    size: int
    content: bytes | None


class SmtpSink:
    """An aiosmtpd server that accepts everything and records when each message arrived."""

    def __init__(self, keep_content: bool = False) -> None:
        self.keep_content = keep_content
        self.messages: list[Mail] = []
        self._changed = threading.Condition()
        # While cleared, DATA is answered only when it is set again (or after hold_limit
        # seconds): a slow mail server, so that exports stay "running" for as long as needed.
        self._open = threading.Event()
        self._open.set()
        self.hold_limit = 120.0
        self.port = free_port()
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's API)
        if not self._open.is_set():
            import asyncio

            await asyncio.get_running_loop().run_in_executor(
                None, self._open.wait, self.hold_limit)
        received = time.perf_counter()
        content = envelope.content if self.keep_content else None
        with self._changed:
            self.messages.append(Mail(received, list(envelope.rcpt_tos),
                                      len(envelope.content), content))
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def hold(self) -> None:
        """Accept connections but delay every reply to DATA until release()."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for_count(self, count: int, timeout: float) -> int:
        """Wait until `count` messages have arrived (or `timeout`); returns how many did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return len(self.messages)

    def wait_for(self, recipient: str, after: int, timeout: float) -> Mail:
        """The first message to `recipient` among those received after the first `after`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for mail in self.messages[after:]:
                    if recipient in mail.recipients:
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no mail to {recipient} within {timeout:.0f} s")
                self._changed.wait(left)

    def stop(self) -> None:
        self._open.set()
        self._controller.stop()


# --------------------------------------------------------------------------- processes

def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A Popen preexec_fn: the child gets `sig` when the process that started it dies, so
    that nothing outlives a benchmark that was killed (Linux; elsewhere a no-op)."""
    from app.jobs.process import die_with_parent as arrange

    parent = os.getpid()
    return lambda: arrange(sig, parent)


def proc_stats() -> Iterable[tuple[int, list[str]]]:
    """(pid, fields of /proc/<pid>/stat after the command name) of every process: fields[2]
    is the process group, fields[3] the session, fields[11] and [12] utime and stime."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat[stat.rindex(")") + 2:].split()


def status_kb(pid: int, field_name: str) -> int | None:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in kB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


class Process:
    """A child process in its own process group, logging to a file; stop() ends the group."""

    def __init__(self, args: list[str], env: dict, log: Path, name: str,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.log = log
        self._log_file = open(log, "ab")  # closed in stop()
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent(signal.SIGKILL))
        self.pid = self.popen.pid
        self.rusage = None

    def alive(self) -> bool:
        return self.rusage is None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early; its log ends:\n{self.log_tail()}")

    def status_kb(self, field_name: str) -> int | None:
        return status_kb(self.pid, field_name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the process group, reap the leader with wait4 (self.rusage holds the
        resource use of it and every descendant it reaped), SIGKILL what is left."""
        if self.rusage is None and self.popen.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self.rusage is None:
                try:
                    pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == self.pid:
                    self.rusage = rusage
                    self.popen.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    os.killpg(self.pid, signal.SIGKILL)
                    deadline = time.monotonic() + 10
                time.sleep(0.02)
        try:  # anything left in the group (an orphaned work horse) goes too
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log_file.close()


class SessionMemory:
    """Samples VmHWM (peak RSS so far) of every process in a session (a worker, its work
    horses, its scheduler) every `interval` seconds, in a thread; .peaks maps a role
    ('worker', 'horse', 'scheduler') to the largest value seen, in MB."""

    def __init__(self, session_id: int, worker_pid: int | None,
                 interval: float = 0.05) -> None:
        self.session_id = session_id
        self.worker_pid = worker_pid
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SessionMemory:
        # A sample at each end as well: a job shorter than the first interval (a loaded
        # machine can delay the thread by seconds) still has its peaks.
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for pid, fields in proc_stats():
            if int(fields[3]) != self.session_id:  # fields[3] is the session id
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
            if not match:
                continue
            if pid == self.session_id:
                continue  # bench.rusage
            role = ("worker" if pid == self.worker_pid
                    else "horse" if int(fields[2]) == pid  # RQ gives it its own group
                    else "scheduler")
            self.peaks[role] = max(self.peaks.get(role, 0.0), int(match.group(1)) / 1024)


class WorkerProcess(Process):
    """The RQ worker exactly as `make run` starts it (Procfile.dev), optionally under `nice`,
    run through bench.rusage so that its peak RSS (and its work horses') can be read."""

    def __init__(self, env: dict, log: Path, nice: int | None = None,
                 worker_class: str | None = None, args: list[str] | None = None,
                 job_class: str | None = None, plain: bool = False) -> None:
        self.plain = plain
        args = args or worker_command()
        args = [str(BIN / args[0]), *args[1:]]
        if worker_class:
            args[args.index("-w") + 1] = worker_class
        if job_class:
            args[-1:-1] = ["--job-class", job_class]  # before the queue's name
        if nice:
            args = ["nice", "-n", str(nice), *args]
        self.rusage_file = log.with_suffix(".rusage.json")
        super().__init__([sys.executable, "-m", "bench.rusage", str(self.rusage_file), "--",
                          *args], env, log, "rq worker")
        self.worker_pid: int | None = None
        self._sampled_peak_mb = 0.0

    def sample_peak(self) -> None:
        """Note the largest VmHWM in the worker's session now (worker, horses, scheduler)."""
        memory = SessionMemory(self.pid, self.worker_pid)
        memory.sample()
        self._sampled_peak_mb = max([self._sampled_peak_mb, *memory.peaks.values()])

    def _rusage(self) -> dict:
        try:
            return json.loads(self.rusage_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_ready(self, redis_conn, timeout: float = 90.0) -> None:
        from rq import Worker

        def registered() -> bool:
            self.check_alive()
            if self.worker_pid is None:
                self.worker_pid = self._rusage().get("pid")
            return self.worker_pid is not None and any(
                w.pid == self.worker_pid for w in Worker.all(connection=redis_conn))

        wait_until(registered, timeout, "the rq worker to register", interval=0.1)
        self.sample_peak()

    def status_kb(self, field_name: str) -> int | None:
        return status_kb(self.worker_pid or self.pid, field_name)

    def memory(self, interval: float = 0.01) -> SessionMemory:
        return SessionMemory(self.pid, self.worker_pid, interval)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.alive():
            self.sample_peak()
        if self.plain and sig == signal.SIGTERM and self.alive():
            # RQ's own Worker may wait up to 60 s for its pub/sub thread after a warm shutdown
            # (a race of rq 3 with redis-py 8.2 that AppWorker's PromptExit avoids): the
            # warm shutdown gets 2 s, then super().stop's SIGTERM is RQ's cold shutdown.
            os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and os.waitid(
                    os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.05)
        # An idle worker takes SIGTERM as a warm shutdown and exits at once.
        super().stop(sig, timeout)

    @property
    def peak_rss_mb(self) -> float | None:
        """Peak RSS of the worker and of every child it reaped (work horses, scheduler).
        When the wrapper could not write it (killed on a slow shutdown), the largest peak
        sampled at the worker's start and stop; None only if neither was ever read."""
        maxrss_kb = self._rusage().get("maxrss_kb")
        if maxrss_kb is not None:
            return maxrss_kb / 1024
        return self._sampled_peak_mb or None


class WebServer(Process):
    """gunicorn with gunicorn.conf.py, exactly as `make run` starts it, on a local port.

    `gunicorn_args` (e.g. "--workers 4 --worker-class gthread") go in GUNICORN_CMD_ARGS, which
    gunicorn applies over its config file: the way to run two apps under the same settings.
    `command` and `cwd` run another app's gunicorn instead (bench/peers.py)."""

    def __init__(self, env: dict, log: Path, gunicorn_args: str = "",
                 command: list[str] | None = None, cwd: Path = ROOT) -> None:
        self.port = free_port()
        if command is None:
            args = web_command()
            command = [str(BIN / args[0]), *args[1:]]
        env = dict(env, GUNICORN_BIND=f"127.0.0.1:{self.port}", PORT=str(self.port))
        if gunicorn_args:
            env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{self.port} {gunicorn_args}"
        super().__init__(command, env, log, "gunicorn", cwd)

    def wait_ready(self, timeout: float = 180.0) -> None:
        # Generous: beside another test suite gunicorn has been seen to need more than 60 s to
        # import the app and answer (tests/test_bench_smoke.py starts every benchmark at once).
        def answers() -> bool:
            self.check_alive()
            try:
                status, _, _ = Http(self.port).request("GET", "/auth/login")
                return status == 200
            except OSError:
                return False

        wait_until(answers, timeout, "gunicorn to answer", interval=0.1)

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = 20.0) -> None:
        super().stop(sig, timeout)  # SIGQUIT: gunicorn's quick shutdown


# --------------------------------------------------------------------------- services

class Services:
    """A temporary installation of Microblog: instance dir, database, embedded redis-server on
    a Unix socket, an aiosmtpd server, and the app object (created after the environment is
    set). Use as a context manager; every process it started is stopped on the way out."""

    def __init__(self, name: str, database: str = "sqlite", keep_mail: bool = False,
                 proposed: bool = False) -> None:
        self.name = name
        self.database = database
        # Run the workers with the change docs/performance.md still proposes (bench/proposed.py).
        self.proposed = proposed
        self.keep_mail = keep_mail
        self.tmp = Path(tempfile.mkdtemp(prefix=f"microblog-bench-{name}-"))
        self.processes: list[Process] = []
        self.smtp: SmtpSink | None = None
        self.app = None
        self.redis_proc: subprocess.Popen | None = None

    # -- set up
    def __enter__(self) -> Services:
        self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._set_up()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _set_up(self) -> None:
        if "config" in sys.modules:  # it would have read the developer's settings
            raise RuntimeError("the app was imported before the bench set its environment")
        instance = self.tmp / "instance"
        instance.mkdir()
        self.smtp = SmtpSink(keep_content=self.keep_mail)
        self.redis_url = "unix://" + str(self.tmp / "redis.sock")
        self.database_url = self._prepare_database()
        env = os.environ
        for name in ("MAIL_USE_TLS", "MAIL_USE_SSL", "MAIL_USERNAME", "MAIL_PASSWORD",
                     "LOG_TO_STDOUT", "MICROBLOG_ENV"):
            env.pop(name, None)
        env.update(MICROBLOG_INSTANCE=str(instance), DATABASE_URL=self.database_url,
                   REDIS_URL=self.redis_url, MAIL_SERVER="127.0.0.1",
                   MAIL_PORT=str(self.smtp.port), SECRET_KEY="microblog-bench-secret",
                   FLASK_APP="microblog.py",
                   # Every client of a benchmark comes from 127.0.0.1: that is load, not abuse.
                   RATELIMIT_ENABLED="false")
        # Jobs at normal CPU priority unless the environment says otherwise: the benchmarks
        # measure what the code costs, on a machine others may share (at the default, idle,
        # a job waits for every other program); `bench pages` compares the priorities.
        env.setdefault("WORKER_CPU_PRIORITY", "normal")
        env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))

        self.redis_proc = start_redis(self.redis_url, self.tmp)

        from flask_migrate import upgrade

        from app import create_app

        self.app = create_app()
        self.ctx = self.app.app_context()
        self.ctx.push()
        upgrade(directory=str(ROOT / "migrations"))
        if "://" in self.database:  # a database we were lent: start from empty tables
            _empty_tables()
        self.redis = self.app.redis

    @property
    def worker_class_label(self) -> str:
        return PROPOSED_WORKER if self.proposed else "app.jobs.worker.AppWorker (as make run)"

    def _prepare_database(self) -> str:
        if self.database == "sqlite":
            return "sqlite:///" + str(self.tmp / "bench.db")
        if "://" in self.database:  # e.g. MICROBLOG_TEST_DATABASE_URL: migrated, then emptied
            return self.database
        if self.database != "postgresql":
            raise SystemExit("--database is sqlite or postgresql")
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                             autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DB,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {POSTGRES_DB}")
        with psycopg.connect(POSTGRES_URL,
                             autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return POSTGRES_URL

    def env(self, **extra: str) -> dict:
        return dict(os.environ, **extra)

    def start_worker(self, nice: int | None = None, wait: bool = True,
                     worker_class: str | None = None, plain: bool = False,
                     job_class: str | None = None, **env: str) -> WorkerProcess:
        """A worker as `make run` starts it; `plain`: started with the tutorial's command;
        `job_class`: its jobs of that class (bench.phases.PhasedJob)."""
        log = self.tmp / f"worker-{len(self.processes)}.log"
        if plain:
            worker = WorkerProcess(self.env(**env), log, nice=nice,
                                   args=plain_worker_command(self.redis_url),
                                   job_class=job_class, plain=True)
        else:
            worker_class = worker_class or (PROPOSED_WORKER if self.proposed else None)
            worker = WorkerProcess(self.env(**env), log, nice=nice, worker_class=worker_class,
                                   job_class=job_class)
        self.processes.append(worker)
        if wait:
            worker.wait_ready(self.redis)
        return worker

    def start_web(self, gunicorn_args: str = "", **env: str) -> WebServer:
        web = WebServer(self.env(**env), self.tmp / "gunicorn.log", gunicorn_args)
        self.processes.append(web)
        web.wait_ready()
        return web

    # -- tear down
    def __exit__(self, *exc) -> None:
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as err:  # keep going: every process must be stopped
                print(f"could not stop {proc.name}: {err}", file=sys.stderr)
        if self.app is not None:
            from app import db

            db.session.remove()
            db.engine.dispose()
            self.ctx.pop()
        if self.redis_proc is not None:
            stop_redis(self.redis_proc)
        if self.smtp is not None:
            self.smtp.stop()
        if os.environ.get("MICROBLOG_BENCH_KEEP"):
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, self._previous_sigterm)

    # -- the machine, for the record
    def machine(self) -> dict:
        info = machine_info()
        from app import db

        info["database"] = db.engine.dialect.name
        if db.engine.dialect.name == "postgresql":
            info["postgresql"] = db.session.execute(db.text("SHOW server_version")).scalar()
            db.session.rollback()
        return info


def start_redis(url: str, directory: Path) -> subprocess.Popen:
    """An embedded redis-server on the Unix socket of `url` (unix://...), answering when this
    returns; it dies with this process."""
    from app.embedded_redis import server_args, wait

    proc = subprocess.Popen(server_args(url[len("unix://"):], str(directory)),
                            stdout=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent())
    wait(url, timeout=60)
    return proc


def stop_redis(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _empty_tables() -> None:
    from app import db

    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import rq

    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "rq": rq.__version__, "loadavg": [round(x, 2) for x in os.getloadavg()]}


# --------------------------------------------------------------------------- data

FILLER = ('Benchmark text with "quotes", a back\\slash, <b>markup</b> & ampersands, '
          "한국어 문장, emoji 🎉😀, and plain words that vary the length of every post "
          "so that bodies run from short notes to nearly the full 280 characters allowed "
          "in a post of the microblog, as people write them.")


def create_user(username: str, password: str | None = PASSWORD):
    from app import db
    from app.models import User

    user = User(username=username, email=f"{username}@bench.example")
    if password:
        user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def create_users(prefix: str, count: int, password: str | None = None) -> list[int]:
    """`count` users in one statement, without passwords unless `password` is given (hashed
    once for them all: hashing is slow on purpose); returns their ids."""
    import sqlalchemy as sa
    from werkzeug.security import generate_password_hash

    from app import db
    from app.models import User

    password_hash = generate_password_hash(password) if password else None
    db.session.execute(sa.insert(User), [
        {"username": f"{prefix}{i}", "email": f"{prefix}{i}@bench.example", "token_salt": "x",
         "password_hash": password_hash}
        for i in range(count)])
    db.session.commit()
    return list(db.session.scalars(
        sa.select(User.id).where(User.username.like(f"{prefix}%")).order_by(User.id)))


def add_posts(user_id: int, count: int, start: str = "2024-01-01 00:00:00") -> None:
    """Insert `count` posts for a user in one INSERT ... SELECT (recursive CTE on SQLite,
    generate_series on PostgreSQL): a million rows take seconds. Timestamps are 37 s apart
    (oldest first) with varying microseconds, stored as SQLAlchemy stores them."""
    from app import db

    if count <= 0:
        return
    dialect = db.engine.dialect.name
    params = {"n": count, "uid": user_id, "filler": FILLER, "start": start}
    body = ("'Post ' || i || ' of the benchmark. ' || substr(:filler, "
            "CAST(1 + (i * 7) % 60 AS INTEGER), CAST(10 + (i * 13) % 200 AS INTEGER))")
    language = "CASE i % 4 WHEN 0 THEN 'en' WHEN 1 THEN 'es' WHEN 2 THEN 'ko' END"
    if dialect == "sqlite":
        sql = f"""
            WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
            INSERT INTO post (body, "timestamp", user_id, language)
            SELECT {body},
                   strftime('%Y-%m-%d %H:%M:%S', CAST(strftime('%s', :start) AS INTEGER) + i * 37,
                            'unixepoch')
                     || '.' || printf('%06d', (i * 7919) % 1000000),
                   :uid, {language}
            FROM seq"""
    elif dialect == "postgresql":
        sql = f"""
            INSERT INTO post (body, "timestamp", user_id, language)
            SELECT {body},
                   CAST(:start AS timestamp) + i * interval '37 seconds'
                     + ((i * 7919) % 1000000) * interval '1 microsecond',
                   :uid, {language}
            FROM generate_series(CAST(0 AS bigint), :n - 1) AS i"""
    else:
        raise SystemExit(f"the benchmarks support SQLite and PostgreSQL, not {dialect}")
    db.session.execute(db.text(sql), params)
    db.session.commit()


def analyze() -> None:
    from app import db

    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


# --------------------------------------------------------------------------- HTTP

class Http:
    """One keep-alive connection to the local web server."""

    def __init__(self, port: int, cookie: str | None = None, timeout: float = 30.0) -> None:
        self.port = port
        self.cookie = cookie
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, response.msg, data
            except (http.client.HTTPException, ConnectionError):
                self.close()  # the server closed an idle keep-alive connection: once more
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                  r'name="csrf_token" value="([^"]+)"')


def _cookies(msg: http.client.HTTPMessage) -> dict[str, str]:
    cookies = {}
    for header in msg.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        cookies[name.strip()] = rest.split(";", 1)[0]
    return cookies


def login(port: int, username: str, password: str = PASSWORD) -> str:
    """Log in through the real form; returns the Cookie header of the logged-in session."""
    http_ = Http(port)
    status, msg, page = http_.request("GET", "/auth/login")
    match = CSRF.search(page.decode())
    if status != 200 or not match:
        raise RuntimeError(f"no login form (HTTP {status})")
    cookies = _cookies(msg)
    http_.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    form = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrf_token": match.group(1) or match.group(2)})
    status, msg, _ = http_.request(
        "POST", "/auth/login", form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 302:
        raise RuntimeError(f"login as {username} failed (HTTP {status})")
    cookies.update(_cookies(msg))
    http_.close()
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, every expected response
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, p: float) -> float:
        return 1000 * percentile(self.latencies, p)


def run_load(port: int, path: str, cookie: str | None, connections: int, duration: float,
             max_requests: int = 1_000_000, accept: str = "text/html",
             headers: dict[str, str] | None = None, expect: int = 200) -> LoadResult:
    """A closed loop: `connections` threads, each with one keep-alive connection, sending GET
    `path` (with `headers`) back to back for `duration` seconds (or `max_requests` in all);
    any status but `expect` counts as an error."""
    result = LoadResult()
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.perf_counter() + duration

    def client() -> None:
        conn = Http(port, cookie)
        mine: list[float] = []
        errors = 0
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            started = time.perf_counter()
            try:
                status, _, _ = conn.request("GET", path,
                                            headers={"Accept": accept, **(headers or {})})
            except OSError:
                status = 0
            if status == expect:
                mine.append(time.perf_counter() - started)
            else:
                errors += 1
        conn.close()
        with lock:
            result.latencies.extend(mine)
            result.errors += errors

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    result.elapsed = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- event streams

def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `wanted` (never past the hard limit), before
    the web server starts: its processes inherit the limit, and every open /events stream is a
    socket at both ends. Returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class StreamEvent:
    arrived: float  # time.time() when the bytes that completed it were read
    id: str | None
    name: str  # the `event:` field, "message" without one (as EventSource names it)
    data: str


class EventStream:
    """One GET /events held open as a browser's EventSource holds it, on a plain asyncio
    connection: a thousand of them cost the benchmark a thousand sockets, not a thousand
    threads. Each event goes to `on_event`; comments (keep-alives) and `retry:` are skipped."""

    def __init__(self, port: int, cookie: str,
                 on_event: Callable[[EventStream, StreamEvent], None] | None = None) -> None:
        self.port = port
        self.cookie = cookie
        self.on_event = on_event
        self.events = 0
        self.ended_by_server = False
        self._reader = None
        self._writer = None
        self._chunked = False
        self._closing = False

    async def open(self, timeout: float = 30.0) -> None:
        """Connect, send the request, read the response head. Raises RuntimeError unless the
        answer is 200 text/event-stream."""
        import asyncio

        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), timeout)
        self._writer.write(
            (f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
             f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
             f"Cookie: {self.cookie}\r\n\r\n").encode())
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in header_lines if line)}
        status = int(status_line.split()[1])
        if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
            raise RuntimeError(f"/events answered {status_line!r}")
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"

    async def pump(self) -> None:
        """Read events until the server ends the stream or close() is called."""
        import asyncio
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")()
        buffer = ""
        try:
            while True:
                data = await self._read_chunk()
                if not data:
                    break
                arrived = time.time()
                buffer += decoder.decode(data)
                while "\n\n" in buffer:
                    frame, buffer = buffer.split("\n\n", 1)
                    self._frame(frame, arrived)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self.ended_by_server = not self._closing

    async def _read_chunk(self) -> bytes:
        if not self._chunked:
            return await self._reader.read(65536)
        size_line = await self._reader.readline()
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            return b""
        return (await self._reader.readexactly(size + 2))[:-2]

    def _frame(self, frame: str, arrived: float) -> None:
        event_id, name, data = None, "message", []
        for line in frame.split("\n"):
            field_name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field_name == "id":
                event_id = value
            elif field_name == "event":
                name = value
            elif field_name == "data":
                data.append(value)
        if not data:  # a comment or a retry: line
            return
        self.events += 1
        if self.on_event is not None:
            self.on_event(self, StreamEvent(arrived, event_id, name, "\n".join(data)))

    def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()


def stream_caps(users: int, per_user: int) -> dict[str, str]:
    """The /events caps raised to what the benchmark holds on purpose: every stream comes from
    one address (loopback), and each watcher stands for a user with many tabs."""
    count = users * per_user
    return {"EVENTS_MAX_PER_USER": str(max(per_user, 10)),
            "EVENTS_MAX_PER_ADDRESS": str(count + 100),
            "EVENTS_MAX_PER_PROCESS": str(count + 100)}


class StreamClients:
    """Holds EventStreams from one asyncio loop in a background thread (the benchmark's own
    threads go on measuring meanwhile). Use as a context manager: every stream is closed on
    the way out."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="streams",
                                        daemon=True)
        self._pumps: dict[EventStream, object] = {}

    def __enter__(self) -> StreamClients:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close(list(self._pumps))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def open(self, port: int, cookies: Sequence[str], per_cookie: int,
             on_event: Callable[[EventStream, StreamEvent], None] | None = None,
             at_once: int = 50, timeout: float = 120.0) -> list[EventStream]:
        """`per_cookie` streams for each cookie, at most `at_once` connecting at a time (a
        thousand tabs do not open in the same millisecond either). Returns once every stream
        has its response head; raises if any failed."""
        import asyncio

        streams = [EventStream(port, cookie, on_event)
                   for cookie in cookies for _ in range(per_cookie)]

        async def open_all() -> None:
            gate = asyncio.Semaphore(at_once)

            async def open_one(stream: EventStream) -> None:
                async with gate:
                    await stream.open()
                self._pumps[stream] = asyncio.ensure_future(stream.pump())

            await asyncio.gather(*(open_one(s) for s in streams))

        try:
            asyncio.run_coroutine_threadsafe(open_all(), self.loop).result(timeout)
        except BaseException:
            self.close(streams)
            raise
        return streams

    def close(self, streams: Sequence[EventStream]) -> None:
        """Close these streams from the client side, as closing the tabs would."""
        import asyncio

        async def close_all() -> None:
            pumps = [self._pumps.pop(s) for s in streams if s in self._pumps]
            for stream in streams:
                stream.close()
            await asyncio.gather(*pumps, return_exceptions=True)

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(60)


@dataclass
class ProcessFigures:
    pid: int
    rss_kb: int
    pss_kb: int  # shared pages (gunicorn forks its workers) counted once across processes
    cpu_s: float  # utime + stime so far
    connections: int  # accepted TCP connections held: each open stream is one


def _accepted_connections(port: int) -> set[str]:
    """Socket inodes of the TCP connections accepted on local `port` (not the listener)."""
    inodes = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table_path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def process_group(pgid: int, port: int) -> list[ProcessFigures]:
    """Figures of every process in a process group (a Process's children: gunicorn's master
    and its workers, listening on `port`), read from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    accepted = _accepted_connections(port)
    found = []
    for pid, fields in proc_stats():
        if int(fields[2]) != pgid:
            continue
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            connections = 0
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                connections += target.startswith("socket:[") and target[8:-1] in accepted
        except OSError:
            continue
        found.append(ProcessFigures(
            pid=pid, rss_kb=status_kb(pid, "VmRSS") or 0,
            pss_kb=int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)),
            cpu_s=(int(fields[11]) + int(fields[12])) / ticks,  # utime, stime
            connections=connections))
    return found


def web_schedstat(web: WebServer) -> tuple[int, int]:
    """Nanoseconds the web processes have run, and waited to run, so far (Linux)."""
    ran = waited = 0
    for process in process_group(web.pid, web.port):
        try:
            fields = Path(f"/proc/{process.pid}/schedstat").read_text().split()
        except OSError:
            continue
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran, waited


# --------------------------------------------------------------------------- statistics

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def summary(values: Iterable[float], digits: int = 3) -> dict:
    """Median and min-max of repetitions."""
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits),
            "n": len(values)}


def number(value: float | None, digits: int = 2) -> str:
    """A figure for a progress line; "n/a" when it could not be measured (None or NaN)."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def fmt(s: dict, unit: str = "", digits: int = 2) -> str:
    """`median (min–max)` of a summary()."""
    if s["median"] is None:
        return "-"
    f = f"{{:,.{digits}f}}"
    spread = "" if s["n"] < 2 else f" ({f.format(s['min'])}–{f.format(s['max'])})"
    return f"{f.format(s['median'])}{unit}{spread}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(bench: str, payload: dict) -> None:
    """The machine-readable line: `BENCH_JSON {"bench": ..., ...}`."""
    print("BENCH_JSON " + json.dumps({"bench": bench, **payload}, ensure_ascii=False),
          flush=True)


def say(*args) -> None:
    """Progress notes go to stderr, so stdout holds only the table and the JSON line."""
    print(*args, file=sys.stderr, flush=True)
