"""The worker side of the app: one Flask app per worker process, and the worker class that
`make run`, the Procfile and the deployment units use:

    rq worker -w app.worker.AppWorker --with-scheduler microblog-tasks

Plain `rq worker microblog-tasks` (the tutorial's command) works too, but RQ's forking worker
then imports app.tasks, and so builds the Flask app, again in every job's child process.
AppWorker loads the app once in the parent, so each forked child inherits it ready-made.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from functools import cache

from flask import Flask
from rq.worker import Worker

from app import logs


@cache
def get_worker_app() -> Flask:
    """The Flask app of this worker process, created once."""
    from app import create_app, db

    app = create_app()
    with app.app_context():
        engine = db.engine
    # A forked child must not reuse the parent's pooled database connections.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return app


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class AppWorker(Worker):
    """RQ's forking Worker with the app preloaded, a configurable heartbeat grace and the
    task lifecycle told when a work horse is killed (RQ has no callback for that)."""

    def __init__(self, *args, **kwargs):
        import app.tasks  # noqa: F401  -- builds the app once, in the parent

        super().__init__(*args, **kwargs)
        self.heartbeat_grace = get_worker_app().config["TASK_HEARTBEAT_GRACE"]
        logs.configure_worker(get_worker_app().config["LOG_FORMAT"])

    def execute_job(self, job, queue):
        # The worker's own lines about the job (and the forked work horse's) carry its id.
        with logs.job_context(job):
            super().execute_job(job, queue)

    @property
    def dequeue_timeout(self) -> int:
        # RQ waits up to worker_ttl - 15 s (405 s) for a job before doing maintenance, so an
        # idle worker would clean up a dead worker's abandoned job only minutes later. Wake up
        # every maintenance interval instead.
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def main_work_horse(self, job, queue):
        # The work horse runs in a process group of its own, so killing the worker (SIGKILL,
        # a lost container) would leave it running, unwatched: its job would be requeued as
        # abandoned while it still runs. Have the kernel kill it when its worker dies.
        _die_with_parent()
        super().main_work_horse(job, queue)

    def get_heartbeat_ttl(self, job) -> int:
        # RQ's default adds 60 s; a shorter grace lets a dead worker's job be noticed sooner.
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - self.current_job_working_time, interval)
        return int(interval) + self.heartbeat_grace

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        from app import jobs

        with get_worker_app().app_context():
            jobs.record_failure(job.id, jobs.WorkHorseKilled(), will_retry=job.should_retry)
