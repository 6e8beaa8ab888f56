"""What the load benchmarks (burst, soak) share: users created straight in the database,
browser-like clients logged in through the real login form, a record of every response, the
memory of a process group read from /proc, and the Task rows' final state.

Like bench.harness, nothing here imports the app at module level.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import CSRF, PASSWORD, Services, machine_info, percentile

# A request that got no answer at all (refused, reset, timed out).
NO_ANSWER = 0
CLIENT_TIMEOUT = 60.0


# --------------------------------------------------------------------------- servers

def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default="sqlite",
                        help="sqlite, postgresql (our own microblog_bench) or a database URL "
                             "(migrated, then emptied)")
    parser.add_argument("--proposed", action="store_true",
                        help="workers warmed up as docs/performance.md proposes (3)")


def start_servers(services: Services, workers: int) -> tuple[list, object]:
    """`workers` RQ workers and gunicorn, as `make run` starts them; returns both."""
    started = [services.start_worker(wait=False) for _ in range(workers)]
    for worker in started:  # they start side by side
        worker.wait_ready(services.redis)
    return started, services.start_web()


def after_run(services: Services) -> dict:
    """What the servers say at the end: none may have died; tracebacks in their logs."""
    for process in services.processes:
        process.check_alive()
    logs = [p.log for p in services.processes] + list((services.tmp / "instance").rglob("*.log"))
    return {"log_tracebacks": log_tracebacks(logs),
            "web_worker_deaths": log_count(services.tmp / "gunicorn.log", WEB_WORKER_DEATH),
            "loadavg_after": machine_info()["loadavg"]}


def servers_note(r: dict) -> str:
    """The end of a report: what the servers' logs and the machine's load said."""
    return (f"gunicorn workers lost: {r['web_worker_deaths']}; tracebacks in the logs: "
            f"{r['log_tracebacks']}; load average {r['machine']['loadavg']} before, "
            f"{r['machine']['loadavg_after']} after")


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class BenchUser:
    id: int
    username: str
    email: str


def create_users_with_posts(prefix: str, count: int, posts_each: int) -> list[BenchUser]:
    """`count` users who all have the bench password (hashed once: scrypt is slow on
    purpose) and `posts_each` short posts, inserted with plain INSERTs so that every
    database the app supports takes them."""
    import sqlalchemy as sa
    from werkzeug.security import generate_password_hash

    from app import db
    from app.models import Post, User, utcnow

    password_hash = generate_password_hash(PASSWORD)
    db.session.execute(sa.insert(User), [
        {"username": f"{prefix}{i}", "email": f"{prefix}{i}@bench.example",
         "password_hash": password_hash, "token_salt": os.urandom(8).hex()}
        for i in range(count)])
    db.session.commit()
    users = [BenchUser(*row) for row in db.session.execute(
        sa.select(User.id, User.username, User.email)
        .where(User.username.like(f"{prefix}%")).order_by(User.id))]
    now = utcnow()
    if posts_each:
        db.session.execute(sa.insert(Post), [
            {"body": f"Post {n} of {user.username}, written for the load benchmark.",
             "user_id": user.id, "timestamp": now, "language": "en"}
            for user in users for n in range(posts_each)])
        db.session.commit()
    return users


def follow_ring(users: list[BenchUser], each: int) -> None:
    """Each user follows the next `each` users, so every home feed has other people's posts."""
    import sqlalchemy as sa

    from app import db
    from app.models import followers

    rows = [{"follower_id": u.id, "followed_id": users[(i + k) % len(users)].id}
            for i, u in enumerate(users) for k in range(1, min(each, len(users) - 1) + 1)]
    if rows:
        db.session.execute(sa.insert(followers), rows)
        db.session.commit()


def task_states(user_ids: Iterable[int], name: str | None = None) -> Counter:
    """How many Task rows of these users are in each status."""
    import sqlalchemy as sa

    from app import db
    from app.models import Task

    query = (sa.select(Task.status, sa.func.count(Task.id))
             .where(Task.user_id.in_(list(user_ids))).group_by(Task.status))
    if name:
        query = query.where(Task.name == name)
    counts = Counter(dict(db.session.execute(query).all()))
    db.session.rollback()  # the next look must see fresh rows
    return counts


def wait_tasks_terminal(user_ids: list[int], timeout: float) -> Counter:
    """Task states once none is queued or running, or when `timeout` is up."""
    from app.models import TaskStatus

    deadline = time.monotonic() + timeout
    while True:
        states = task_states(user_ids)
        active = sum(states[s] for s in TaskStatus.ACTIVE)
        if not active or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


# --------------------------------------------------------------------------- responses

@dataclass
class Sample:
    kind: str
    status: int  # NO_ANSWER when there was no response
    seconds: float
    expected: bool


@dataclass
class Recorder:
    """Every response of a run, from any number of threads."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few, to show
    # requests sent again after the server closed an idle keep-alive connection under them
    retried: Counter = field(default_factory=Counter)
    retry_reasons: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry(self, kind: str, detail: str) -> None:
        with self._lock:
            self.retried[kind] += 1
            if len(self.retry_reasons) < 5:
                self.retry_reasons.append(f"{kind}: {detail}")

    def add(self, sample: Sample, detail: str = "") -> None:
        with self._lock:
            self.samples.append(sample)
            if not sample.expected and len(self.errors) < 20:
                self.errors.append(f"{sample.kind}: HTTP {sample.status} {detail}".rstrip())

    def kinds(self) -> list[str]:
        return sorted({s.kind for s in self.samples})

    def stats(self, kinds: Iterable[str] | None = None) -> dict:
        """count, errors, 5xx, p50/p99 in ms of the samples of these kinds (all by default)."""
        wanted = set(kinds) if kinds is not None else None
        picked = [s for s in self.samples if wanted is None or s.kind in wanted]
        answered = [s.seconds for s in picked if s.status != NO_ANSWER]
        return {"count": len(picked),
                "errors": sum(not s.expected for s in picked),
                "status_5xx": sum(s.status >= 500 for s in picked),
                "no_answer": sum(s.status == NO_ANSWER for s in picked),
                "resent": sum(n for kind, n in self.retried.items()
                              if wanted is None or kind in wanted),
                "p50_ms": round(1000 * percentile(answered, 50), 1) if answered else None,
                "p99_ms": round(1000 * percentile(answered, 99), 1) if answered else None}

    def by_kind(self) -> dict[str, dict]:
        return {kind: self.stats([kind]) for kind in self.kinds()}


class Client:
    """One browser: a requests.Session with the user's cookies, logged in through the real
    login form, sending the CSRF token the pages carry. Every response goes to `recorder`."""

    def __init__(self, port: int, user: BenchUser, recorder: Recorder) -> None:
        import requests

        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.user = user
        self.recorder = recorder
        self.session = requests.Session()
        self.csrf_token: str | None = None

    def login(self) -> None:
        page = self.get("login_form", "/auth/login")
        response = self.post("login", "/auth/login",
                             {"username": self.user.username, "password": PASSWORD})
        if page is None or response is None or "/auth/login" in response.headers.get(
                "Location", "/auth/login"):
            raise RuntimeError(f"{self.user.username} could not log in")

    def twin(self) -> Client:
        """A second tab of the same browser: the same cookies, its own connection."""
        other = Client(self.port, self.user, self.recorder)
        other.session.cookies.update(self.session.cookies)
        other.csrf_token = self.csrf_token
        return other

    def get(self, kind: str, path: str, expect: int = 200, json: bool = False):
        headers = {"Accept": "application/json"} if json else {}
        return self._send(kind, "GET", path, expect, headers=headers)

    def post(self, kind: str, path: str, data: dict, expect: int = 302):
        return self._send(kind, "POST", path, expect,
                          data=dict(data, csrf_token=self.csrf_token or ""))

    def _send(self, kind: str, method: str, path: str, expect: int, **kwargs):
        import requests

        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                response = self.session.request(method, self.base + path,
                                                allow_redirects=False,
                                                timeout=CLIENT_TIMEOUT, **kwargs)
                break
            except requests.RequestException as exc:
                # gunicorn closes a keep-alive connection idle for `keepalive` (2 s); a
                # request sent on it at that moment meets a closed socket before any answer.
                # Browsers send it again on a new connection, and so do we, once: counted.
                if attempt == 1 and "Connection aborted" in str(exc):
                    self.recorder.retry(kind, f"{method} {path}: {exc}")
                    continue
                self.recorder.add(Sample(kind, NO_ANSWER, time.perf_counter() - started,
                                         False), f"{method} {path}: {exc}")
                return None
        seconds = time.perf_counter() - started
        ok = response.status_code == expect
        self.recorder.add(Sample(kind, response.status_code, seconds, ok), f"{method} {path}")
        if "text/html" in response.headers.get("Content-Type", ""):
            match = CSRF.search(response.text)
            if match:
                self.csrf_token = match.group(1) or match.group(2)
        return response

    def close(self) -> None:
        self.session.close()


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Wait for all of them, `timeout` seconds in all (they are daemons: late ones die with
    the benchmark)."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def log_in_all(clients: list[Client], threads: int = 8) -> None:
    """Log every client in, a few at a time (each login checks a scrypt hash)."""
    pending = list(clients)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                client = pending.pop()
            try:
                client.login()
            except BaseException as exc:  # re-raised below, in the caller's thread
                failures.append(exc)
                return

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    join_all(workers, CLIENT_TIMEOUT * len(clients))
    if failures:
        raise failures[0]


# --------------------------------------------------------------------------- memory

def _rss_kb(pid: str) -> int:
    try:
        match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc", pid, "status").read_text(), re.M)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def _ids(pid: str) -> tuple[int, int] | None:
    """(process group, session) of a process."""
    try:
        stat = Path("/proc", pid, "stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return int(fields[2]), int(fields[3])
    except (OSError, ValueError, IndexError):
        return None


def group_rss_mb(sessions: Iterable[int], skip: Iterable[int] = (),
                 horses: bool = True) -> float:
    """The summed RSS (MB) of every process in these sessions but the `skip` pids: gunicorn's
    master and workers; an RQ worker with its scheduler and, with `horses`, the work horse
    of the moment (bench.harness starts each in a session of its own; RQ puts each horse
    in a process group of its own)."""
    sessions, skip = set(sessions), {str(p) for p in skip}
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name in skip:
            continue
        ids = _ids(entry.name)
        if ids is None or ids[1] not in sessions:
            continue
        is_horse = ids[0] == int(entry.name) and ids[0] != ids[1]
        if horses or not is_horse:
            total += _rss_kb(entry.name)
    return total / 1024


class RssWatch:
    """Samples the RSS of named process groups every `interval` seconds in a thread:
    .first / .last / .peak per group, and mark(label) keeps the current values."""

    def __init__(self, groups: dict[str, tuple[list[int], list[int], bool]],
                 interval: float = 2.0) -> None:
        self.groups = groups  # name -> (sessions, pids to skip, count work horses)
        self.interval = interval
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.marks: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> dict[str, float]:
        now = {name: group_rss_mb(sessions, skip, horses)
               for name, (sessions, skip, horses) in self.groups.items()}
        with self._lock:
            for name, mb in now.items():
                self.first.setdefault(name, mb)
                self.last[name] = mb
                self.peak[name] = max(self.peak.get(name, 0.0), mb)
        return now

    def mark(self, label: str) -> dict[str, float]:
        self.marks[label] = {k: round(v, 1) for k, v in self.sample().items()}
        return self.marks[label]


# What gunicorn's master logs when one of its workers dies or is killed (timeout, memory).
WEB_WORKER_DEATH = re.compile(r"WORKER TIMEOUT|Worker \(pid:\d+\) (?:was sent|exited)")


def log_count(path: Path, pattern: re.Pattern) -> int:
    try:
        return len(pattern.findall(path.read_text(errors="replace")))
    except OSError:
        return 0


def log_tracebacks(paths: Iterable[Path]) -> int:
    """Tracebacks written to the servers' logs (gunicorn, the workers, instance/logs)."""
    return sum(log_count(path, re.compile(r"Traceback \(most recent call last\)"))
               for path in paths)
