"""What docs/performance.md still proposes for app/ and can be measured by swapping a class,
applied in a worker class of the bench so that its effect is measured beside the real thing
(`python -m bench dispatch --proposed`). Nothing in app/ is changed by this module.

Proposal 3: AppWorker warms up in the parent. It runs the task lifecycle's statements once,
in a transaction it rolls back, so that every forked work horse inherits configured mappers
and compiled SQL instead of redoing that work for each job.

    rq worker -w bench.proposed.ProposedWorker --with-scheduler ... microblog-tasks

(Proposals 1, 2 and 4 of the first round, progress throttling, SQLite WAL and the feed's one
IN, are in app/ now and so in every run; the web server always runs as `make run` runs it.)
"""

from __future__ import annotations

import uuid

from app.worker import AppWorker, get_worker_app


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


class ProposedWorker(AppWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with get_worker_app().app_context():
            warm_up()
