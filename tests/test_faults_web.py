"""Fault: a gunicorn worker process SIGKILLed under load. See docs/reliability.md."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from app import db
from app.models import Post, User
from tests.conftest import make_user, worker_env
from tests.test_tasks import children_of

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
        self.crashed: Exception | None = None

    def request(self, method: str, path: str, **kwargs):
        import requests

        started = time.monotonic()
        try:
            response = self.session.request(method, self.base + path, timeout=30,
                                            allow_redirects=False, **kwargs)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # refused, reset, or the response cut off when its process was killed mid-send
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
        try:
            self._run(rounds)
        except Exception as exc:  # seen by the test, not lost in the thread
            self.crashed = exc

    def _run(self, rounds: int) -> None:
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


@pytest.mark.timeout(300)
def test_a_web_worker_killed_under_load_others_serve_and_no_row_is_half_written(
        app, tmp_path):
    import threading

    from tests.test_deployment import Processes, free_port, healthy, process_alive, wait_until

    port = free_port()
    names = [f"user{i}" for i in range(LOAD_USERS)]
    for name in names:
        make_user(name)
    db.session.remove()
    processes = Processes(tmp_path, worker_env(
        GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=2, GUNICORN_ACCESS_LOG=""))
    try:
        arbiter = processes.start("web", "exec gunicorn -c gunicorn.conf.py microblog:app")
        wait_until(lambda: processes.running("web") and healthy(port), 120,
                   lambda: f"gunicorn's /health\n{processes.logs()}")
        web_workers = wait_until(lambda: len(children_of(arbiter.pid)) == 2 and
                                 children_of(arbiter.pid), 120, "two gunicorn workers")
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
        wait_until(lambda: any(u.posting for u in users), 120, "a post in flight",
                   interval=0.001)
        victim = web_workers[0]
        os.kill(victim, signal.SIGKILL)
        # Its sockets close as it exits, which a busy machine may take a while to get to.
        wait_until(lambda: not process_alive(victim), 120, "the killed worker to exit",
                   interval=0.01)
        killed_at = time.monotonic()
        for thread in threads:
            thread.join(timeout=240)
        assert not any(thread.is_alive() for thread in threads)
        assert [u.crashed for u in users] == [None] * LOAD_USERS
        # The arbiter replaced the dead worker.
        replaced = wait_until(lambda: len(children_of(arbiter.pid)) == 2
                              and victim not in children_of(arbiter.pid), 120, "a new worker")
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
    # Only requests that were in flight on the killed process may break, or that a client
    # sent on one of its keep-alive connections in the instant before the kernel had closed
    # them (seen on MariaDB's run: a request 0.4 ms after the kill). Within a second, then;
    # any later breakage would be the site failing.
    assert all(started < killed_at + 1.0 for started, _ in broken), (broken, killed_at)
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
