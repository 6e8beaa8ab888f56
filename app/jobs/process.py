"""Tuning of our processes that comes before the app, or goes without it: the cyclic garbage
collector while the app's modules are imported, and a child process's death with its parent.
It imports only the standard library: app/__init__.py uses it before its own imports, and
app/embedded_redis.py, which must not build the app, uses die_with_parent.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block, and none to catch up on after it.

    For the app's imports (app/__init__.py): they make hundreds of thousands of objects and no
    garbage, and the collector's passes over them were 10-20 % of the import, which plain
    `rq worker` pays in every job's work horse (docs/performance.md §1). Turned back on
    plainly, the collector would walk every one of those objects at the next allocation (a
    first collection of 0.1 s); instead they join the oldest generation at once, as if they
    had survived the passes they skipped, and only a full collection ever walks them.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # a frozen heap of the caller's stays frozen
            gc.freeze()  # every tracked object out of the young generations ...
            gc.unfreeze()  # ... and into the oldest
        gc.enable()


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have the kernel send this process `signum` when its parent exits (Linux; a no-op
    elsewhere), so that it is never left running alone. `parent`: the pid the caller knows
    as its parent (a child before exec, called from preexec_fn); if it is already gone, exit
    at once rather than never hear of it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid() if parent is None else parent
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signum)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
