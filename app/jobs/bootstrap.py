"""What a worker process needs before it runs anything: its Flask app, built once and tuned for
the jobs it forks or runs, and what a lost Redis looks like. The task functions (app/tasks.py),
the lifecycle (app/jobs/lifecycle.py) and the worker class (app/jobs/worker.py) all build on
it, so it imports nothing of ours above the app factory: with it below them, those three
import each other one way only (worker -> tasks -> lifecycle -> here).
"""

from __future__ import annotations

import ctypes
import gc
import os
from functools import cache

import redis
from flask import Flask

from app import create_app, db
from app.redis_connection import ride_out_outages

# What a restart or a network blip of Redis looks like to a client.
REDIS_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@cache
def get_worker_app() -> Flask:
    """The Flask app of this worker process, created once: without the `flask` commands and
    without the web's blueprints and extensions (see create_app)."""
    app = create_app(commands=False, web=False)
    ride_out_outages(app.redis)  # the job's own writes (mail claims) in the work horse
    with app.app_context():
        engine = db.engine
    # A forked child must not reuse the parent's pooled database connections.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    keep_freed_memory()
    # What was built lives as long as the process: out of the collector's sight. Otherwise
    # the first full collection in each work horse forked from a worker that preloads it
    # (AppWorker) walks, and so copies page by page, the whole heap it shares with that
    # worker: 0.1-0.2 s of every export. (No gc.collect() first: see docs/performance.md §1.)
    gc.freeze()
    return app


# glibc's malloc hands memory back to the kernel whenever a free leaves enough of it at the
# top of the heap, and serves each large block with an mmap of its own: an export frees and
# allocates a batch's worth 500 times per million posts, and each time the kernel maps the
# pages in again (440,000 page faults and 1 s of system time at a million posts, a fifth of
# the export's CPU). Fixed thresholds keep that memory in the process: an RQ work horse runs
# one job and exits, and an export's peak (one batch) does not change.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Fix glibc malloc's thresholds for this process and the work horses it forks (nothing
    elsewhere)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest
    mallopt(M_TRIM_THRESHOLD, 64 * 2**20)
