"""The kinds of task and how each is run: the queue it waits in, its time limit, which may
depend on the user's data, and its retry policy. launch (app/jobs/lifecycle.py) and an
operator's retry (app/jobs/operations.py) both read them here; /metrics lists every type from
TASK_TYPES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import rq
from flask import current_app

from app.models import User

# Results and failures stay in Redis this long, for reconcile and operators.
RESULT_TTL = 24 * 3600

# The queues a task may wait in, by the setting that names each (config.py, JOB_QUEUES: every
# worker takes them in this order). Short tasks go to the default queue, which the pool of
# non-forking workers serves (app/jobs/pool.py); long ones, which a forking worker runs best
# (docs/performance.md §9), to the bulk queue. Mail has a queue of its own (app/email.py).
MAIL_QUEUE, DEFAULT_QUEUE, BULK_QUEUE = "MAIL_QUEUE", "TASK_QUEUE", "BULK_QUEUE"


@dataclass(frozen=True)
class TaskType:
    """How a kind of task is run: the queue it waits in (the setting naming it), its time
    limit (which may depend on the user's data), and its retry policy: how often a transient
    failure is retried, and the setting that holds the seconds between those retries."""

    job_timeout: Callable[[User], int]
    queue: str = DEFAULT_QUEUE
    max_retries: int = 0
    # An export's transient failures are mostly the mail server's: it waits as mail does.
    retry_intervals_setting: str = "MAIL_RETRY_INTERVALS"

    def retry(self) -> rq.Retry | None:
        """The retry policy, as RQ takes it (launch) and as operations.retry restores it;
        None when the type is never retried."""
        if not self.max_retries:
            return None
        return rq.Retry(max=self.max_retries,
                        interval=current_app.config[self.retry_intervals_setting] or [0])

    def job_queue(self) -> rq.Queue:
        """The RQ queue this kind of task is enqueued on (launch, an operator's retry)."""
        return current_app.job_queues[current_app.config[self.queue]]


def _export_timeout(user: User) -> int:
    # Generous: the export streams ~10^4 posts a second; mail may take a while.
    return 300 + user.posts_count() // 1000


def import_timeout(archive_bytes: int | None) -> int:
    """The time limit of an import's preview or import, for an archive of this size (the
    routes pass it to launch): generous, as for exports. Reading and importing go at
    several MB a second; this allows 50 KB a second, on top of ten minutes."""
    return 600 + (archive_bytes or 0) // 50_000


def _import_timeout(user: User) -> int:
    # Launched without a size (by hand): the largest archive accepted.
    return import_timeout(current_app.config["IMPORT_MAX_BYTES"])


TASK_TYPES: dict[str, TaskType] = {
    "countdown": TaskType(job_timeout=lambda user: 600),
    "export_posts": TaskType(job_timeout=_export_timeout, max_retries=3, queue=BULK_QUEUE),
    # Retried like exports: a killed worker's import goes on where it stopped
    # (app/imports/importer.py); an archive refused is never retried (failures.py).
    "preview_import": TaskType(job_timeout=_import_timeout, max_retries=3, queue=BULK_QUEUE),
    "import_posts": TaskType(job_timeout=_import_timeout, max_retries=3, queue=BULK_QUEUE),
    "noop": TaskType(job_timeout=lambda user: 60),
}
DEFAULT_TASK_TYPE = TaskType(job_timeout=lambda user: 600)


def task_type(name: str) -> TaskType:
    """How a task of this name is run (a type not in TASK_TYPES: ten minutes, no retries)."""
    return TASK_TYPES.get(name, DEFAULT_TASK_TYPE)
