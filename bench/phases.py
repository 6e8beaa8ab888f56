"""Where an export job's time goes, timed from outside its code: the job class of the export
benchmark's workers,

    rq worker ... --job-class bench.phases.PhasedJob microblog-tasks

In the work horse, once the job's function is imported, it wraps the steps app/tasks.py's
export_posts calls (the lifecycle's start, the count, each batch's progress, the file, the
mail) and leaves the wall-clock time each phase ended in job.meta["phases"], which the job's
finish saves with its progress; bench/export.py reads them (PHASES). Nothing in app/ knows of
it, and it imports nothing of ours before the job's function does: a plain `rq worker` must
not load the app in the worker itself.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from rq.job import Job

EXPORT = "app.tasks.export_posts"
# The export job running in this process: its marks so far (None between jobs).
_phases: dict[str, float] | None = None


class PhasedJob(Job):
    @property
    def func(self):
        func = super().func
        if self.func_name != EXPORT or func is None:
            return func
        _wrap_steps()
        return functools.partial(_timed, self, func)


def _timed(job: Job, func: Callable, *args, **kwargs):
    global _phases
    _phases = job.meta["phases"] = {"task": time.time()}
    try:
        return func(*args, **kwargs)
    finally:
        _phases = None


def _mark(name: str) -> None:
    if _phases is not None and name not in _phases:
        _phases[name] = time.time()


def _ends(name: str, step: Callable) -> Callable:
    """`step`, marking the phase `name` ended when it first returns."""
    @functools.wraps(step)
    def timed(*args, **kwargs):
        result = step(*args, **kwargs)
        _mark(name)
        return result

    return timed


@functools.cache
def _wrap_steps() -> None:
    """Once per process, after app.tasks was imported."""
    from app.exports import delivery
    from app.exports import formats as exports
    from app.jobs import lifecycle

    lifecycle.start = _ends("started", lifecycle.start)
    exports.count_posts = _ends("counted", exports.count_posts)
    update = lifecycle.Progress.update

    def first_batch(progress, done: int) -> None:
        _mark("first_batch")  # once the first batch is written, before its report
        update(progress, done)

    lifecycle.Progress.update = first_batch
    delivery.write_file = _ends("written", delivery.write_file)
    delivery.compose_mail = _ends("mail_built", delivery.compose_mail)
    delivery.send_mail = _ends("mail_sent", delivery.send_mail)
