"""Job functions that the pool tests (tests/test_pool.py) enqueue: a worker process imports
them by name (`tests.pool_jobs.pid`), as it imports app.tasks."""

from __future__ import annotations

import os
import time

_kept: list[bytes] = []


def pid() -> int:
    """The process that ran the job."""
    return os.getpid()


def hold(megabytes: int) -> int:
    """Keep `megabytes` MB alive in the worker after the job ends (a leaking job)."""
    _kept.append(os.urandom(megabytes * 2**20))
    return os.getpid()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def spin_in_c(count: int) -> int:
    """Run in C for a long time without returning to the interpreter, so that no signal
    handler (RQ's timeout alarm) can run meanwhile."""
    return sum(range(count))
