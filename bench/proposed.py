"""The changes docs/performance.md proposes for app/, applied in a worker class of the bench
so that their effect is measured beside the real thing (`python -m bench export --proposed`).
Nothing in app/ is changed by this module; it patches the worker process it runs in.

1. AppWorker warms up in the parent: it runs the lifecycle's statements once, in a
   transaction it rolls back, so that every forked work horse inherits configured mappers and
   compiled SQL instead of redoing that work for each job (~10 ms of CPU a job here).
2. SQLite in WAL mode with synchronous=NORMAL (a `connect` listener in create_app): a commit
   then costs no fsync, where the default rollback journal costs about three.
3. jobs.Progress writes at most every PROGRESS_MIN_INTERVAL seconds: the page polls once a
   second, so more frequent writes are never seen, and each one is a commit.

    rq worker -w bench.proposed.ProposedWorker --with-scheduler ... microblog-tasks
    gunicorn -c gunicorn.conf.py 'bench.proposed:web_app()'
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import event

from app.worker import AppWorker, get_worker_app

PROGRESS_MIN_INTERVAL = 0.5


def use_sqlite_wal(engine) -> None:
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def throttle_progress() -> None:
    from app import jobs

    def update(self, done: int) -> None:
        percent = 100 if self.total == 0 else min(int(100 * done / self.total), 99)
        if percent > self.last_percent:
            now = time.monotonic()
            if now - getattr(self, "last_write", 0.0) >= PROGRESS_MIN_INTERVAL:
                self.last_percent = percent
                self.last_write = now
                jobs.set_progress(percent, self.job)

    jobs.Progress.update = update


def warm_up() -> None:
    """Run the task lifecycle's statements once, then roll everything back."""
    from app import db, jobs
    from app.models import Task, TaskStatus, User, utcnow

    name = f"~warm-up-{uuid.uuid4().hex[:8]}"
    try:
        user = User(username=name, email=f"{name}@localhost", token_salt="x")
        db.session.add(user)
        db.session.flush()
        task = Task(id=str(uuid.uuid4()), name=name, user_id=user.id, progress=0,
                    status=TaskStatus.QUEUED, active_name=name, created_at=utcnow())
        db.session.add(task)
        db.session.flush()
        db.session.get(Task, task.id)
        db.session.get(User, user.id)
        task.status = TaskStatus.RUNNING
        jobs._notify(task)
        db.session.flush()
        task.complete = True
        jobs._notify(task)
        db.session.flush()
    finally:
        db.session.rollback()
        db.session.remove()


def web_app():
    """The web app with the proposed database settings (gunicorn 'bench.proposed:web_app()')."""
    from app import db
    from microblog import app

    with app.app_context():
        use_sqlite_wal(db.engine)
    return app


class ProposedWorker(AppWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from app import db

        with get_worker_app().app_context():
            db.engine.dispose()  # connections made before the listener existed
            use_sqlite_wal(db.engine)
            warm_up()
        throttle_progress()
