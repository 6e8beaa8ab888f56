"""Side by side with the tutorial app: our Microblog against the Flask Mega-Tutorial's own
microblog as of chapter 22 (an unmodified copy in ../shared/peers/microblog-v0.22), on the same
data, with the same gunicorn workers (4 processes; ours with the gevent worker class it ships,
theirs with gthread, 2 threads each: their requirements have no gevent, and they ship one sync
worker), each with its own embedded redis-server, measured in one run:

  pages:    home, explore and /notifications (logged in through each app's own login form),
            requests per second and p99 latency at 4 and 16 connections;
  export:   2,000 and 20,000 posts, from the request (ours: POST /export_posts, JSON; theirs:
            GET /export_posts) until the mail arrives at a real aiosmtpd server;
  dispatch: N trivial jobs, enqueue -> all finished, on each app's own worker command (ours:
            the Procfile.dev line, theirs: `rq worker microblog-tasks`).

Theirs runs from a temporary copy with a virtual environment of its own (its requirements.txt,
from the machine's package index), its schema made by its own `flask db upgrade`. One line is
changed in the copy, and the output says so: the `time.sleep(5)` its export makes per post (a
teaching device). The same generated users, follows and posts go into both databases: written
into ours, then copied row by row into theirs (SQLite ATTACH), so counts and bodies are equal.

Without ../shared/peers (or --peers DIR, or $MICROBLOG_PEERS_DIR) it prints why it skipped
and exits 0.

    python -m bench peers [--duration 5] [--repeat 3] [--export-sizes 2000,20000]
                          [--jobs 50] [--web-workers 4] [--worker-class gthread]
                          [--our-worker-class gevent] [--compare-worker-class gthread]
                          [--threads 2] [--quick] [--peers DIR]

--compare-worker-class CLASS runs ours a second time, on CLASS, measured in the same loop
(the order rotating every run) as ours on --our-worker-class and theirs: which worker class
serves our pages better on this machine, with the share of the web's CPU its busiest process
used (1 / workers: the load was spread evenly) and the scheduler's figures (/proc schedstat).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from bench.harness import (
    CSRF,
    QUEUE,
    ROOT,
    Http,
    Process,
    Services,
    WebServer,
    add_posts,
    analyze,
    create_user,
    create_users,
    emit,
    fmt,
    login,
    process_group,
    run_load,
    say,
    start_redis,
    stop_redis,
    summary,
    table,
    wait_until,
)

NAME = "peers"
PEER = "microblog-v0.22"
PAGES = {"home": "/", "explore": "/explore", "notifications": "/notifications?since=0"}
ACCEPT = {"home": "text/html", "explore": "text/html", "notifications": "application/json"}
# The one line changed in their copy: five seconds per exported post.
PEER_SLEEP = "time.sleep(5)"
# --compare-worker-class: ours a second time, on that worker class.
COMPARED = "ours_compared"
TARGETS = {"pages_min": 2.0, "export_min": 50.0, "everywhere_min": 1.0}

# Run with their virtual environment's python: enqueue `count` trivial jobs on their queue and
# time until RQ has finished them all. The job is `time.sleep(0)` reached through their
# `app.tasks` module (RQ resolves "app.tasks.time.sleep" as the attribute `time.sleep` of
# app.tasks), so each job pays what any of their tasks pays: importing app.tasks, which builds
# their app. Chapter 22 has no trivial task of its own (its `example` was dropped).
PEER_DISPATCH = """
import json, sys, time
from redis import Redis
from rq import Queue

url, count = sys.argv[1], int(sys.argv[2])
queue = Queue(sys.argv[3], connection=Redis.from_url(url))
done, failed = queue.finished_job_registry, queue.failed_job_registry
before, failed_before = done.count, failed.count  # a failed export may be there already
started = time.perf_counter()
for _ in range(count):
    queue.enqueue("app.tasks.time.sleep", 0)
enqueued = time.perf_counter() - started
deadline = time.monotonic() + 60 + 5 * count
while done.count < before + count:
    if failed.count > failed_before or time.monotonic() > deadline:
        sys.exit(f"{failed.count - failed_before} jobs failed, {done.count - before} of "
                 f"{count} finished")
    time.sleep(0.01)
print(json.dumps({"enqueue_s": enqueued, "total_s": time.perf_counter() - started}))
"""


def peers_dir(option: str | None = None) -> Path:
    """Where the peers live: --peers, $MICROBLOG_PEERS_DIR, or ../shared/peers."""
    return Path(option or os.environ.get("MICROBLOG_PEERS_DIR") or ROOT.parent / "shared" / "peers")


# --------------------------------------------------------------------------- their app

class PeerApp:
    """The tutorial's app installed in a temporary copy: its own venv, SQLite file (its
    default app.db), embedded redis-server, gunicorn and `rq worker`, all stopped on exit."""

    def __init__(self, source: Path, tmp: Path, smtp_port: int) -> None:
        self.source = source
        self.tmp = tmp
        self.root = tmp / PEER
        self.venv = tmp / "peer-venv"
        self.redis_url = "unix://" + str(tmp / "peer-redis.sock")
        self.smtp_port = smtp_port
        self.processes: list[Process] = []
        self.redis_proc: subprocess.Popen | None = None
        self.changes: list[str] = []

    @property
    def database(self) -> Path:
        return self.root / "app.db"

    def __enter__(self) -> PeerApp:
        try:
            self._set_up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _set_up(self) -> None:
        shutil.copytree(self.source, self.root)
        for path in (self.root, *self.root.rglob("*")):  # the source may be read-only
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        self._remove_sleep()
        started = time.perf_counter()
        # pip from our venv installs into theirs (--python): no ensurepip, no compiling every
        # file up front; a few seconds less for the smoke test.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)],
                       check=True)
        self._run([sys.executable, "-m", "pip", "--python", str(self.venv / "bin" / "python"),
                   "install", "--quiet", "--no-compile", "--disable-pip-version-check",
                   "-r", str(self.root / "requirements.txt")], "pip install")
        say(f"peers: {PEER} installed in {time.perf_counter() - started:.0f} s")
        self.redis_proc = start_redis(self.redis_url, self.tmp)
        # As its Procfile's web line does before gunicorn (not its `flask translate compile`:
        # the bench asks for no language, so every page is in English, as without it).
        self._run([str(self.venv / "bin" / "flask"), "db", "upgrade"], "flask db upgrade")

    def _remove_sleep(self) -> None:
        tasks = self.root / "app" / "tasks.py"
        lines = tasks.read_text().splitlines(keepends=True)
        found = [i for i, line in enumerate(lines) if line.strip() == PEER_SLEEP]
        if len(found) != 1:
            raise RuntimeError(f"expected one `{PEER_SLEEP}` line in {tasks}, found {len(found)}")
        del lines[found[0]]
        tasks.write_text("".join(lines))
        self.changes.append(f"app/tasks.py line {found[0] + 1} `{PEER_SLEEP}` removed "
                            "(export_posts sleeps 5 s per post)")

    def env(self) -> dict:
        """Only what their config reads (none of ours leaks in); DATABASE_URL unset: app.db."""
        return {"PATH": f"{self.venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
                "HOME": os.environ.get("HOME", str(self.tmp)), "LANG": "C.UTF-8",
                "FLASK_APP": "microblog.py", "SECRET_KEY": "microblog-bench-secret",
                "REDIS_URL": self.redis_url, "RQ_REDIS_URL": self.redis_url,
                "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(self.smtp_port)}

    def _run(self, args: list[str], what: str) -> None:
        done = subprocess.run(args, cwd=self.root, env=self.env(), capture_output=True,
                              text=True)
        if done.returncode:
            raise RuntimeError(f"{PEER}: {what} failed:\n{done.stdout}\n{done.stderr[-3000:]}")

    def start_web(self, gunicorn_args: str) -> WebServer:
        web = WebServer(self.env(), self.tmp / "peer-gunicorn.log", gunicorn_args,
                        command=[str(self.venv / "bin" / "gunicorn"), "microblog:app"],
                        cwd=self.root)
        self.processes.append(web)
        web.wait_ready()
        return web

    def start_worker(self) -> Process:
        """Their worker command, as their Procfile has it (RQ_REDIS_URL says where Redis is)."""
        log = self.tmp / "peer-worker.log"
        worker = Process([str(self.venv / "bin" / "rq"), "worker", QUEUE], self.env(), log,
                         "their rq worker", cwd=self.root)
        self.processes.append(worker)

        def listening() -> bool:
            worker.check_alive()
            return "Listening on" in log.read_text(errors="replace")

        wait_until(listening, 60, "their rq worker to listen", interval=0.1)
        return worker

    def dispatch(self, count: int) -> dict:
        done = subprocess.run([str(self.venv / "bin" / "python"), "-c", PEER_DISPATCH,
                               self.redis_url, str(count), QUEUE], cwd=self.root,
                              env=self.env(), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"their dispatch failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout)

    def export_failure(self, user_id: int) -> str | None:
        """Why the user's latest export job failed (the first exception the worker logged for
        it, and how far its progress got), or None while it has not failed."""
        from redis import Redis

        with sqlite3.connect(self.database) as conn:
            row = conn.execute("SELECT id FROM task WHERE user_id = ? ORDER BY rowid DESC "
                               "LIMIT 1", (user_id,)).fetchone()
            progress = conn.execute(
                "SELECT payload_json FROM notification WHERE user_id = ? AND name = "
                "'task_progress' ORDER BY id DESC LIMIT 1", (user_id,)).fetchone()
        if row is None:
            return None
        with Redis.from_url(self.redis_url) as redis:
            if redis.hget(f"rq:job:{row[0]}", "status") != b"failed":
                return None
        log = (self.tmp / "peer-worker.log").read_text(errors="replace")
        _, _, after = log.partition(f"[Job {row[0]}]")
        match = re.search(r"^[\w.]+(?:Exception|Error): .+$", after, re.M)
        reason = match.group(0) if match else "the job failed"
        if progress:
            reason += f"; its progress had reached {json.loads(progress[0])['progress']}%"
        return reason

    def tasks_in_progress(self, user_id: int) -> int:
        with sqlite3.connect(self.database) as conn:
            return conn.execute("SELECT count(*) FROM task WHERE user_id = ? AND NOT complete",
                                (user_id,)).fetchone()[0]

    def __exit__(self, *exc) -> None:
        for proc in self.processes:
            if proc.name == "their rq worker" and proc.alive():
                # A second SIGTERM is RQ's cold shutdown, which also kills a running work
                # horse (in a session of its own, it would outlive a group kill); RQ ignores
                # one that comes within a second of the first.
                os.kill(proc.pid, signal.SIGTERM)
                time.sleep(1.5)
        for proc in reversed(self.processes):
            try:
                # In a trial their gunicorn 21 was still up 20 s after SIGQUIT; nothing of
                # theirs is measured any more: SIGKILL after 3 s.
                proc.stop(timeout=3)
            except Exception as err:  # keep going: every process must be stopped
                print(f"could not stop {proc.name}: {err}", file=sys.stderr)
        if self.redis_proc is not None:
            stop_redis(self.redis_proc)


# --------------------------------------------------------------------------- data

def load_data(users: int, follows: int, posts: int, export_sizes: list[int]) -> dict:
    """Into our database: a reader (password PASSWORD) and `users - 1` others, each following
    the next `follows` users (the reader the first `follows`), `posts` posts each; one user
    with a password per export size, with that many posts. Returns the user ids."""
    import sqlalchemy as sa

    from app import db
    from app.models import followers

    reader = create_user("reader").id
    others = create_users("user", users - 1)
    exporters = {size: create_user(f"export{size}").id for size in export_sizes}
    people = [reader, *others]
    rows = [{"follower_id": uid, "followed_id": people[(i + k) % len(people)]}
            for i, uid in enumerate(people) for k in range(1, follows + 1)]
    db.session.execute(sa.insert(followers), rows)
    db.session.commit()
    start = datetime(2025, 6, 1)
    for i, uid in enumerate(people):  # a second apart, so that no two posts share a time
        add_posts(uid, posts, start=str(start + timedelta(seconds=i)))
    for size, uid in exporters.items():
        add_posts(uid, size)
    return {"reader": reader, "exporters": exporters,
            "posts": posts * len(people) + sum(export_sizes), "follows": len(rows)}


def copy_data(ours: Path, theirs: Path) -> dict:
    """Users, follows and posts from our SQLite file into theirs, same ids, same bodies."""
    with sqlite3.connect(theirs) as conn:
        conn.execute("ATTACH DATABASE ? AS ours", (str(ours),))
        conn.execute("INSERT INTO user (id, username, email, password_hash, about_me, "
                     "last_seen) SELECT id, username, email, password_hash, about_me, "
                     "last_seen FROM ours.user")
        conn.execute("INSERT INTO followers (follower_id, followed_id) "
                     "SELECT follower_id, followed_id FROM ours.followers")
        conn.execute('INSERT INTO post (id, body, "timestamp", user_id, language) '
                     'SELECT id, body, "timestamp", user_id, language FROM ours.post')
        conn.commit()
        conn.execute("ANALYZE")  # as analyze() does for ours
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("user", "followers", "post")}
        same = conn.execute("SELECT count(*) FROM post JOIN ours.post AS o USING (id) "
                            "WHERE post.body = o.body AND post.timestamp = o.timestamp "
                            "AND post.user_id = o.user_id").fetchone()[0]
        conn.commit()
        conn.execute("DETACH DATABASE ours")
    if same != counts["post"]:
        raise RuntimeError(f"only {same} of {counts['post']} posts copied alike")
    return counts


# --------------------------------------------------------------------------- measurements

def check_pages(port: int, cookie: str, app: str) -> None:
    """The load hits real pages: the feed shows posts, /notifications answers a JSON list."""
    for page, path in PAGES.items():
        status, _, body = Http(port, cookie).request("GET", path,
                                                     headers={"Accept": ACCEPT[page]})
        ok = (isinstance(json.loads(body), list) if page == "notifications"
              else "Post " in body.decode())
        if status != 200 or not ok:
            raise RuntimeError(f"{app} {path} not as expected (HTTP {status})")


def web_cpu_s(web: WebServer) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each process of a gunicorn (its master
    and workers), by pid."""
    return {p.pid: p.cpu_s for p in process_group(web.pid, web.port)}


def schedstat(pids) -> dict[int, tuple[float, float, int]]:
    """Of each process, summed over its threads: seconds on a CPU, seconds runnable but
    waiting for one (/proc/PID/task/*/schedstat), and voluntary context switches (the times
    it went to sleep: blocked on a socket, a lock, epoll)."""
    figures = {}
    for pid in pids:
        on_cpu = waiting = sleeps = 0
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                ran, waited, _ = (task / "schedstat").read_text().split()
                on_cpu, waiting = on_cpu + int(ran), waiting + int(waited)
                sleeps += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)",
                                        (task / "status").read_text(), re.M).group(1))
        except (OSError, AttributeError, ValueError):
            continue
        figures[pid] = (on_cpu / 1e9, waiting / 1e9, sleeps)
    return figures


def measure_pages(web: WebServer, cookie: str, connections: int, duration: float) -> dict:
    """req/s and latencies as the client sees them, and the web processes' CPU time per
    request: the figure the other benchmarks sharing the machine disturb least. Also how the
    work was spread: the busiest process's share of the CPU, and per request the seconds
    the processes waited for a CPU while runnable and how often they slept."""
    figures = {}
    for page, path in PAGES.items():
        cpu_before = web_cpu_s(web)
        sched_before = schedstat(cpu_before)
        r = run_load(web.port, path, cookie, connections, duration, accept=ACCEPT[page])
        cpu_after = web_cpu_s(web)
        sched_after = schedstat(cpu_before)
        by_process = [cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after]
        cpu_s = sum(by_process)
        requests = max(1, len(r.latencies) + r.errors)
        both = [pid for pid in sched_before if pid in sched_after]
        figures[page] = {"rps": r.rps, "p50_ms": r.percentile_ms(50),
                         "p99_ms": r.percentile_ms(99), "errors": r.errors,
                         "cpu_ms": 1000 * cpu_s / requests,
                         "cpu_top_share": max(by_process) / cpu_s if cpu_s else 0.0,
                         "run_wait_ms": 1000 * sum(sched_after[p][1] - sched_before[p][1]
                                                   for p in both) / requests,
                         "sleeps": sum(sched_after[p][2] - sched_before[p][2]
                                       for p in both) / requests}
    return figures


def csrf_token(port: int, cookie: str, path: str) -> str:
    status, _, page = Http(port, cookie).request("GET", path)
    match = CSRF.search(page.decode())
    if status != 200 or not match:
        raise RuntimeError(f"no CSRF token on {path} (HTTP {status})")
    return match.group(1) or match.group(2)


class ExportFailed(Exception):
    """The export ended without a mail: args are the reason and the seconds it took."""


def export_once(smtp, port: int, cookie: str, username: str, posts: int, ours: bool,
                failure: Callable[[], str | None] = lambda: None) -> tuple[float, bytes]:
    """Seconds from the export request until its mail arrived; the mail. Raises ExportFailed
    as soon as `failure()` gives a reason."""
    http_ = Http(port, cookie)
    if ours:
        body = f"csrf_token={csrf_token(port, cookie, f'/user/{username}')}".encode()
        request = ("POST", "/export_posts", body,
                   {"Content-Type": "application/x-www-form-urlencoded"})
    else:
        request = ("GET", "/export_posts", None, None)
    seen = len(smtp.messages)
    started = time.perf_counter()
    status, _, _ = http_.request(*request)
    http_.close()
    if status != 302:
        raise RuntimeError(f"export request answered HTTP {status}")
    deadline = time.monotonic() + 600 + posts / 5
    while True:
        try:
            mail = smtp.wait_for(f"{username}@bench.example", seen, timeout=1.0)
            return mail.received - started, mail.content
        except TimeoutError:
            reason = failure()
            if reason:
                raise ExportFailed(reason, time.perf_counter() - started) from None
            if time.monotonic() > deadline:
                raise


def attached_posts(content: bytes) -> int | None:
    """How many posts the mail's posts.json holds (None: no such attachment)."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    for part in message.iter_attachments():
        if part.get_filename() == "posts.json":
            return len(json.loads(part.get_content())["posts"])
    return None


def our_tasks_in_progress(user_id: int) -> int:
    import sqlalchemy as sa

    from app import db
    from app.models import Task

    count = db.session.scalar(sa.select(sa.func.count(Task.id)).where(
        Task.user_id == user_id, Task.complete.is_(False)))
    db.session.rollback()
    return count


# --------------------------------------------------------------------------- the run

def run(args, source: Path) -> dict:
    # Ours refuses a second export within the cooldown; the bench runs several.
    os.environ["EXPORT_COOLDOWN"] = "0"
    # The same settings for both through GUNICORN_CMD_ARGS, over our gunicorn.conf.py; no
    # access log on either (ours logs by default, theirs does not).
    os.environ["GUNICORN_ACCESS_LOG"] = ""
    gunicorn_args = (f"--workers {args.web_workers} --worker-class {args.worker_class} "
                     f"--threads {args.threads}")
    # --our-worker-class: ours with another worker class (its shipped gevent), theirs as above.
    our_gunicorn_args = gunicorn_args
    if args.our_worker_class and args.our_worker_class != args.worker_class:
        our_gunicorn_args = (f"--workers {args.web_workers} --worker-class "
                             f"{args.our_worker_class} --threads {args.threads}")
    compare_gunicorn_args = (f"--workers {args.web_workers} --worker-class "
                             f"{args.compare_worker_class} --threads {args.threads}"
                             if args.compare_worker_class else "")
    with Services(NAME, keep_mail=True) as services, \
            PeerApp(source, services.tmp, services.smtp.port) as peer:
        from app import db
        from app.models import User

        ids = load_data(args.users, args.follows, args.posts, args.export_sizes)
        analyze()
        counts = copy_data(Path(services.database_url[len("sqlite:///"):]), peer.database)
        # Ours: one task per user at a time, so one user per job (theirs has no Task row).
        dispatch_users = [db.session.get(User, uid)
                          for uid in create_users("dispatch", args.jobs)]
        say(f"peers: {counts['user']} users, {counts['followers']} follows, "
            f"{counts['post']:,} posts in both databases")
        machine = services.machine()

        webs = {"ours": services.start_web(our_gunicorn_args),
                "theirs": peer.start_web(gunicorn_args)}
        if compare_gunicorn_args:  # ours again, on the other worker class, its own log
            webs[COMPARED] = WebServer(services.env(), services.tmp / "gunicorn-compared.log",
                                       compare_gunicorn_args)
            services.processes.append(webs[COMPARED])
            webs[COMPARED].wait_ready()
        cookies = {app: login(web.port, "reader") for app, web in webs.items()}
        for app, web in webs.items():
            check_pages(web.port, cookies[app], app)
            for path in PAGES.values():  # warm up every worker on every page
                run_load(web.port, path, cookies[app], args.web_workers * args.threads,
                         min(args.duration, 1.0))

        pages: list[dict] = []
        apps = list(webs)
        for rep in range(args.repeat):
            order = apps[rep % len(apps):] + apps[:rep % len(apps)]  # who goes first rotates
            run_figures: dict = {}
            for connections in args.connections:
                for app in order:
                    run_figures.setdefault(app, {})[connections] = measure_pages(
                        webs[app], cookies[app], connections, args.duration)
            pages.append(run_figures)
            say(f"peers: pages run {rep + 1}/{args.repeat}: home req/s at "
                f"{args.connections[-1]} connections ours "
                f"{run_figures['ours'][args.connections[-1]]['home']['rps']:.0f}, theirs "
                f"{run_figures['theirs'][args.connections[-1]]['home']['rps']:.0f}; all: "
                + json.dumps(run_figures))

        workers = {"ours": services.start_worker(), "theirs": peer.start_worker()}
        exports = []
        for size in args.export_sizes:
            username = f"export{size}"
            export_cookies = {app: login(web.port, username) for app, web in webs.items()}
            user_id = ids["exporters"][size]
            runs = []
            failed: dict = {}
            for rep in range(args.export_repeat):
                order = ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours")
                seconds: dict = {"theirs": None}
                for app in order:
                    if app == "theirs" and failed:
                        continue  # it would fail again: its Task row may be left in progress
                    try:
                        s, content = export_once(
                            services.smtp, webs[app].port, export_cookies[app], username, size,
                            app == "ours",
                            (lambda u=user_id: peer.export_failure(u)) if app == "theirs"
                            else (lambda: None))
                    except ExportFailed as exc:
                        failed = {"reason": exc.args[0], "after_s": exc.args[1]}
                        say(f"peers: their export of {size:,} posts failed after "
                            f"{exc.args[1]:.0f} s, no mail: {exc.args[0]}")
                        continue
                    # Ours attaches posts.json up to EXPORT_ATTACHMENT_LIMIT (a link always).
                    in_mail = attached_posts(content)
                    if in_mail != size and not (app == "ours" and in_mail is None):
                        raise RuntimeError(f"{app}: the mail holds {in_mail} of {size} posts")
                    seconds[app] = s
                    in_progress = (our_tasks_in_progress if app == "ours"
                                   else peer.tasks_in_progress)
                    wait_until(lambda f=in_progress, u=user_id: f(u) == 0, 120,
                               f"{app}'s export task to complete", interval=0.1)
                runs.append(seconds)
                theirs = "failed" if seconds["theirs"] is None else f"{seconds['theirs']:.2f} s"
                say(f"peers: export {size:,} posts, run {rep + 1}/{args.export_repeat}: ours "
                    f"{seconds['ours']:.2f} s, theirs {theirs}")
            exports.append(_export_result(size, runs, failed))

        from bench.dispatch import bare, lifecycle

        warm_up = min(args.jobs, 2)  # unmeasured, so that both start warm
        lifecycle(services, workers["ours"], dispatch_users[:warm_up])
        peer.dispatch(warm_up)
        dispatch_runs = []
        for rep in range(args.repeat):
            theirs = peer.dispatch(args.jobs)
            ours = lifecycle(services, workers["ours"], dispatch_users)
            ours_bare = bare(services, workers["ours"], args.jobs)
            dispatch_runs.append({"ours": ours, "ours_bare": ours_bare, "theirs": theirs})
            say(f"peers: dispatch run {rep + 1}/{args.repeat}, {args.jobs} jobs: ours "
                f"{ours['total_s']:.2f} s (bare {ours_bare['total_s']:.2f} s), theirs "
                f"{theirs['total_s']:.2f} s")
        changes = peer.changes
    result = {
        "machine": machine, "repeat": args.repeat, "duration_s": args.duration,
        "gunicorn": (f"{gunicorn_args} (GUNICORN_CMD_ARGS, both), no access log"
                     if our_gunicorn_args == gunicorn_args else
                     f"ours {our_gunicorn_args}, theirs {gunicorn_args} (GUNICORN_CMD_ARGS), "
                     "no access log"),
        "workers": {"ours": "Procfile.dev: rq worker -w app.jobs.worker.AppWorker ... (make run)",
                    "theirs": f"rq worker {QUEUE} (their Procfile)"},
        "data": {**counts, "posts_per_user": args.posts, "follows_per_user": args.follows},
        "changes_to_theirs": changes,
        "pages": _pages_result(pages, args.connections),
        **({"worker_classes": _worker_classes_result(
            pages, args.connections, args.our_worker_class or args.worker_class,
            args.compare_worker_class, args.web_workers, machine)}
           if compare_gunicorn_args else {}),
        "exports": exports,
        "dispatch": _dispatch_result(dispatch_runs, args.jobs),
        "targets": TARGETS,
    }
    result["met"] = _met(result)
    return result


def _per_page(runs: list[dict], connections: list[int],
              figures: Callable[[Callable[[str, str], list[float]]], dict]) -> dict:
    """{connections: {page: figures(values)}}, where values(app, key) is that figure of each
    run."""
    out: dict = {}
    for conn in connections:
        out[str(conn)] = {}
        for page in PAGES:
            def values(app: str, key: str, conn: int = conn, page: str = page) -> list[float]:
                return [r[app][conn][page][key] for r in runs]

            out[str(conn)][page] = figures(values)
    return out


def _better(values: Callable[[str, str], list[float]], first: str, second: str,
            key: str) -> dict:
    """Each run's "how many times better `first` is than `second`": for req/s first /
    second, for p99 and CPU (lower is better) second / first."""
    pairs = zip(values(first, key), values(second, key), strict=True)
    if key == "rps":
        return summary([a / b for a, b in pairs if b])
    return summary([b / a for a, b in pairs if a])


def _pages_result(runs: list[dict], connections: list[int]) -> dict:
    return _per_page(runs, connections, lambda values: {
        **{f"{app}_{key}": summary(values(app, key), 2)
           for app in ("ours", "theirs") for key in ("rps", "p99_ms", "errors", "cpu_ms")},
        "rps_ratio": _better(values, "ours", "theirs", "rps"),
        "p99_ratio": _better(values, "ours", "theirs", "p99_ms"),
        # not a target: what explains the others
        "cpu_ratio": _better(values, "ours", "theirs", "cpu_ms")})


def _worker_classes_result(runs: list[dict], connections: list[int], ours: str,
                           compared: str, workers: int, machine: dict) -> dict:
    """Ours on its worker class ("first") against ours on the compared one; the ratios are
    how many times better the first is."""
    keys = ("rps", "p99_ms", "cpu_ms", "cpu_top_share", "run_wait_ms", "sleeps")
    return {"classes": [ours, compared], "workers": workers,
            "loadavg_at_start": machine["loadavg"],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            **_per_page(runs, connections, lambda values: {
                **{f"{name}_{key}": summary(values(app, key), 2)
                   for name, app in (("first", "ours"), ("compared", COMPARED))
                   for key in keys},
                "rps_ratio": _better(values, "ours", COMPARED, "rps"),
                "p99_ratio": _better(values, "ours", COMPARED, "p99_ms")})}


def _export_result(size: int, runs: list[dict], failed: dict) -> dict:
    """Times and the ratio theirs / ours; when theirs failed (no mail), the ratio is at least
    the time it ran before failing over ours."""
    ours = summary([r["ours"] for r in runs])
    result = {"posts": size, "ours_s": ours,
              "theirs_s": summary([r["theirs"] for r in runs if r["theirs"] is not None]),
              "ratio": summary([r["theirs"] / r["ours"] for r in runs
                                if r["theirs"] is not None])}
    if failed:
        result["theirs_failed"] = failed
        result["ratio_at_least"] = round(failed["after_s"] / ours["median"], 1)
    return result


def _dispatch_result(runs: list[dict], jobs: int) -> dict:
    def per_s(kind: str) -> list[float]:
        return [jobs / r[kind]["total_s"] for r in runs]

    return {"jobs": jobs,
            "ours_jobs_per_s": summary(per_s("ours"), 1),
            "ours_bare_jobs_per_s": summary(per_s("ours_bare"), 1),
            "theirs_jobs_per_s": summary(per_s("theirs"), 1),
            "ratio": summary([o / t for o, t in zip(per_s("ours"), per_s("theirs"),
                                                   strict=True)]),
            "bare_ratio": summary([o / t for o, t in zip(per_s("ours_bare"), per_s("theirs"),
                                                        strict=True)]),
            "ours_job": "user.launch_task('noop'): Task row, started, finished",
            "ours_bare_job": "queue.enqueue('bench.noop.noop')",
            "theirs_job": "queue.enqueue('app.tasks.time.sleep', 0): imports their app.tasks"}


def _met(result: dict) -> dict:
    """Which targets the medians meet: pages ≥ 2 × theirs, export ≥ 50 ×, nowhere slower."""
    page_ratios = [f[key]["median"] for by_page in result["pages"].values()
                   for f in by_page.values() for key in ("rps_ratio", "p99_ratio")]
    export_ratios = [e["ratio"]["median"] if e["ratio"]["median"] is not None
                     else e["ratio_at_least"] for e in result["exports"]]
    everything = page_ratios + export_ratios + [result["dispatch"]["ratio"]["median"]]
    return {"pages": all(r >= TARGETS["pages_min"] for r in page_ratios),
            "export": all(r >= TARGETS["export_min"] for r in export_ratios),
            "never_slower": all(r >= TARGETS["everywhere_min"] for r in everything)}


def report(result: dict) -> str:
    def row(what: str, ours: dict, theirs: dict, ratio: dict, target: float,
            digits: int = 1) -> list[str]:
        met = "yes" if ratio["median"] >= target else "NO"
        return [what, fmt(ours, digits=digits), fmt(theirs, digits=digits), fmt(ratio),
                f"≥ {target:g}", met]

    rows = []
    for conn, by_page in result["pages"].items():
        for page, f in by_page.items():
            rows.append(row(f"{page} req/s, {conn} conn", f["ours_rps"], f["theirs_rps"],
                            f["rps_ratio"], TARGETS["pages_min"], 0))
            rows.append(row(f"{page} p99 ms, {conn} conn", f["ours_p99_ms"],
                            f["theirs_p99_ms"], f["p99_ratio"], TARGETS["pages_min"]))
            rows.append([f"{page} web CPU ms a request, {conn} conn",
                         fmt(f["ours_cpu_ms"]), fmt(f["theirs_cpu_ms"]), fmt(f["cpu_ratio"]),
                         "", ""])
    for e in result["exports"]:
        what = f"export {e['posts']:,} posts, s to mail"
        if "theirs_failed" in e:  # no mail: at least the time it ran, over ours
            met = "yes" if e["ratio_at_least"] >= TARGETS["export_min"] else "NO"
            rows.append([what, fmt(e["ours_s"], digits=2),
                         f"no mail (failed after {e['theirs_failed']['after_s']:.0f} s)",
                         f"> {e['ratio_at_least']:g}", f"≥ {TARGETS['export_min']:g}", met])
        else:
            rows.append(row(what, e["ours_s"], e["theirs_s"], e["ratio"],
                            TARGETS["export_min"], 2))
    d = result["dispatch"]
    rows.append(row(f"dispatch {d['jobs']} jobs, jobs/s", d["ours_jobs_per_s"],
                    d["theirs_jobs_per_s"], d["ratio"], TARGETS["everywhere_min"]))
    rows.append(row("  (ours bare RQ job), jobs/s", d["ours_bare_jobs_per_s"],
                    d["theirs_jobs_per_s"], d["bare_ratio"], TARGETS["everywhere_min"]))
    text = table(["figure", "ours", "theirs", "ours better ×", "target", "met"], rows)
    errors = sum(f[f"{app}_errors"]["max"] or 0 for by_page in result["pages"].values()
                 for f in by_page.values() for app in ("ours", "theirs"))
    met = result["met"]
    return text + "\n" + "\n".join([
        "ours better ×: req/s and jobs/s ours / theirs; p99 and seconds theirs / ours "
        f"(median (min–max) of each run's ratio; {result['repeat']} runs)",
        f"targets met: pages ≥ 2×: {'yes' if met['pages'] else 'no'}; export ≥ 50×: "
        f"{'yes' if met['export'] else 'no'}; never slower: "
        f"{'yes' if met['never_slower'] else 'no'}; page errors (non-200): {errors:.0f}",
        f"gunicorn: {result['gunicorn']}",
        f"workers: ours {result['workers']['ours']}; theirs {result['workers']['theirs']}",
        f"dispatch jobs: ours {d['ours_job']}; theirs {d['theirs_job']}",
        f"data, both: {result['data']['user']} users, {result['data']['followers']} follows, "
        f"{result['data']['post']:,} posts",
        "changed in their copy: " + "; ".join(result["changes_to_theirs"]),
        *(f"their export of {e['posts']:,} posts failed: {e['theirs_failed']['reason']}"
          for e in result["exports"] if "theirs_failed" in e),
    ]) + (("\n\n" + _worker_classes_report(result["worker_classes"]))
          if "worker_classes" in result else "")


def _worker_classes_report(wc: dict) -> str:
    first, compared = wc["classes"]

    def pair(f: dict, key: str, digits: int) -> str:
        return " / ".join(f"{f[f'{app}_{key}']['median']:.{digits}f}"
                          for app in ("first", "compared"))

    rows = []
    for conn, by_page in ((k, v) for k, v in wc.items() if k.isdigit()):
        for page, f in by_page.items():
            rows.append([f"{page}, {conn} conn", fmt(f["first_rps"], digits=0),
                         fmt(f["compared_rps"], digits=0), fmt(f["rps_ratio"]),
                         fmt(f["first_p99_ms"], digits=1), fmt(f["compared_p99_ms"], digits=1),
                         fmt(f["p99_ratio"]), pair(f, "cpu_ms", 2),
                         pair(f, "cpu_top_share", 2), pair(f, "run_wait_ms", 1),
                         pair(f, "sleeps", 1)])
    text = table([f"ours: {first} vs {compared}", f"req/s {first}", f"req/s {compared}",
                  f"{first} better ×", f"p99 ms {first}", f"p99 ms {compared}",
                  f"{first} better ×", "CPU ms a request", "busiest process's CPU share",
                  "ms waiting for a CPU a request", "sleeps a request"], rows)
    return text + "\n" + (
        f"pairs: {first} / {compared}; busiest share {1 / wc['workers']:.2f} = even over "
        f"{wc['workers']} workers; waiting: "
        "runnable, not running (schedstat); sleeps: voluntary context switches; load "
        f"average {wc['loadavg_at_start']} at the start, {wc['loadavg_at_end']} at the end")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per page load")
    parser.add_argument("--connections", default="4,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--export-sizes", default="2000,20000")
    parser.add_argument("--export-repeat", type=int, default=1,
                        help="runs per export size (theirs takes minutes at 20,000 posts)")
    parser.add_argument("--jobs", type=int, default=50, help="jobs per dispatch run")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--follows", type=int, default=20, help="users each user follows")
    parser.add_argument("--posts", type=int, default=50, help="posts of each user")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--our-worker-class", default="gevent",
                        help="ours only: gevent, as gunicorn.conf.py ships it (theirs has no "
                             "gevent in its requirements); '' for --worker-class")
    parser.add_argument("--compare-worker-class", default="",
                        help="also run ours on this worker class (e.g. gthread), measured "
                             "alternately with ours on --our-worker-class; adds a table")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", help="the peers folder (default: ../shared/peers)")
    parser.add_argument("--quick", action="store_true",
                        help="small data, 0.5 s loads, one run (smoke test)")
    args = parser.parse_args(argv)
    source = peers_dir(args.peers) / PEER
    if not source.is_dir():
        reason = f"{source} is absent: nothing to compare with"
        print(f"peers: skipped: {reason}")
        emit(NAME, {"skipped": reason})
        return 0
    if args.quick:
        args.duration, args.repeat, args.export_repeat = 0.5, 1, 1
        args.export_sizes, args.jobs = "50,200", 3
        args.users, args.follows, args.posts = 20, 5, 10
        args.web_workers = 2  # each gunicorn worker imports its app: seconds on a busy machine
    args.connections = [int(c) for c in args.connections.split(",")]
    args.export_sizes = [int(s) for s in args.export_sizes.split(",")]
    result = run(args, source)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
