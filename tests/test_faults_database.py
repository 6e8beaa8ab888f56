"""Fault: PostgreSQL restarted during an export, on a private cluster of the test. See
docs/reliability.md."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db
from app.models import TaskStatus
from tests.conftest import csrf_token, login, make_user, start_worker, wait_for, worker_env
from tests.conftest import stop_process as _stop
from tests.faults import (
    assert_tasks_truthful,
    tasks_by_user,
)

# Its own private PostgreSQL cluster whatever the matrix says: once per CI run
# is enough.
pytestmark = pytest.mark.once


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
        from tests.conftest import ROOT, config_for_tests

        uri = database_url(server.url)
        from app import create_app

        with create_app(config_for_tests(SQLALCHEMY_DATABASE_URI=uri)).app_context():
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
        wait_for(lambda: tasks_by_user()["ana"].status == TaskStatus.RUNNING
                 and tasks_by_user()["ana"].progress > 0, interval=0.05,
                 message="the export to be running")
        db.session.remove()
        private_postgres.pg_ctl("-m", "fast", "restart")
        # The web's pooled connection died with the server: the next request still works.
        assert client.get("/index").status_code == 200
        assert client.get("/notifications").status_code == 200
        assert _backend_pid() != pid_before
        wait_for(lambda: tasks_by_user()["ana"].complete, timeout=180, interval=0.5,
                 message="the export to end")
    finally:
        log = _stop(worker)
        print(log, private_postgres.log())
    task = tasks_by_user()["ana"]
    assert_tasks_truthful({"ana": task}, smtp_server.handler_ref.messages)
    assert task.status == TaskStatus.FINISHED, (task.error, log)
    assert task.attempts >= 2, log
    [mail] = smtp_server.handler_ref.messages
    import json

    from tests.test_tasks import attachment_of

    assert len(json.loads(attachment_of(mail).get_content())["posts"]) == 50_000
