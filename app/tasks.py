"""The functions an RQ worker runs. They stay short: the lifecycle is in app/jobs/lifecycle.py and
the export itself in app/exports/. As in the tutorial, this module builds its own app."""

import ctypes
import gc
import time

# As app/__init__.py does for its own imports: no cyclic collection while the worker's
# modules are imported and its app is built (plain `rq worker` does this in every work
# horse); then what they made is frozen, so that the job's collections do not walk it.
_collecting = gc.isenabled()
gc.disable()

from flask import has_app_context  # noqa: E402
from rq import get_current_job  # noqa: E402

from app import db  # noqa: E402
from app.exports import centre, delivery  # noqa: E402
from app.exports import formats as exports  # noqa: E402
from app.exports.storage import cleanup_stale_temp_files  # noqa: E402
from app.jobs import lifecycle, metrics  # noqa: E402
from app.jobs.bootstrap import get_worker_app  # noqa: E402
from app.models import User  # noqa: E402

app = get_worker_app()
if not has_app_context():  # in a worker process; in-process test workers bring their own
    app.app_context().push()
# What was just built lives as long as the process: out of the collector's sight. Otherwise
# the first full collection in each work horse forked from a worker that preloads it
# (AppWorker) walks, and so copies page by page, the whole heap it shares with that worker:
# 0.1-0.2 s of every export. (No gc.collect() first: see docs/performance.md §1.)
if _collecting:
    gc.freeze()
    gc.enable()


def _set_task_progress(progress: float) -> None:
    """The tutorial's helper: job.meta, Task row and `task_progress` notification."""
    lifecycle.set_progress(progress)


def example(seconds):
    """The tutorial's example: counts `seconds` seconds, reporting progress."""
    job = get_current_job()
    print("Starting task")
    for i in range(seconds):
        if job is not None:
            job.meta["progress"] = 100.0 * i / seconds
            job.save_meta()
        print(i)
        time.sleep(1)
    if job is not None:
        job.meta["progress"] = 100
        job.save_meta()
    print("Task completed")


def countdown(user_id, seconds):
    """The example as a tracked task of a user: `seconds` steps of one second."""
    try:
        lifecycle.start()
    except lifecycle.TaskNotActive:
        return
    progress = lifecycle.Progress(total=seconds, unit="seconds")
    for i in range(seconds):
        time.sleep(1)
        progress.update(i + 1)
    lifecycle.finish("Countdown complete.")


def noop(user_id):
    """Does nothing but go through the lifecycle (for the dispatch benchmark)."""
    lifecycle.start()
    lifecycle.finish()


def export_posts(user_id, export_id=None):
    """Export the user's posts to export storage, in the export's format (JSON for a job
    launched without an export, as in the tutorial), and mail the user a link to download
    it, with posts.json attached when small enough. Cancelled, it stops at its next batch
    and ends cleanly: no file, no mail, the task left `cancelled`. The time each phase
    ended is left in job.meta["phases"] (bench/export.py's breakdown)."""
    job = get_current_job()
    phase = _phase_recorder(job)
    if job is not None:
        _keep_freed_memory()
    try:
        task = lifecycle.start()
    except lifecycle.TaskNotActive:
        return
    phase("started")
    user = db.session.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    attempt = task.id if task is not None else None
    export = centre.export_for_job(user, task, export_id)
    try:
        lifecycle.end_if_superseded(task, export, export_id)  # an old attempt ends here
    except lifecycle.TaskNotActive:
        return
    if export is None:
        raise LookupError(f"export {export_id} does not exist")
    try:
        progress = lifecycle.Progress(total=exports.count_posts(user), unit="posts")
        phase("counted")

        def on_progress(done: int) -> None:
            phase("first_batch", first=True)
            progress.update(done)

        written = delivery.write_file(export, attempt, on_progress)
        if written is not None:
            metrics.export_written(app.redis, export.format, written)
        phase("written")
        lifecycle.ensure_active()  # cancelled after the last batch: still no mail
        composed = delivery.compose_mail(export)
        phase("mail_built")
        # one mail per job, whatever its retries: its id is the key
        attached = delivery.send_mail(export, job.id if job else export.id, composed)
        phase("mail_sent")
    except (lifecycle.TaskNotActive, centre.AttemptSuperseded):
        centre.discard_file(export, attempt)
        return
    lifecycle.finish(delivery.finished_message(attached))  # saves the meta, phases included
    centre.replace_oldest(user)  # only now: a cancelled or failed export replaces nothing


# glibc's malloc hands memory back to the kernel whenever a free leaves enough of it at the
# top of the heap, and serves each large block with an mmap of its own: an export frees and
# allocates a batch's worth 500 times per million posts, and each time the kernel maps the
# pages in again (440,000 page faults and 1 s of system time at a million posts, a fifth of
# the export's CPU). Fixed thresholds keep that memory in the process: an RQ work horse runs
# one job and exits, and an export's peak (one batch) does not change.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest
    mallopt(M_TRIM_THRESHOLD, 64 * 2**20)


def _phase_recorder(job):
    """mark(name): the wall-clock time a phase of the job ended, in job.meta["phases"]
    (saved with the job's next progress or its finish; nothing is written to Redis for it)."""
    phases = {"task": time.time()}
    if job is not None:
        job.meta["phases"] = phases

    def mark(name: str, first: bool = False) -> None:
        if not (first and name in phases):
            phases[name] = time.time()

    return mark


# A temporary export file nobody wrote to for this long was left by a killed worker.
STALE_TEMP_FILE_AGE = 24 * 3600


def expire_exports():
    """Scheduled (app/jobs/cron.py): remove the files of exports past EXPORT_RETENTION_DAYS, and
    the temporary files of exports whose worker was killed mid-write (on this worker's disk:
    with several worker hosts, each sweeps its own whenever it runs this job)."""
    expired = centre.expire_due()
    cleanup_stale_temp_files(STALE_TEMP_FILE_AGE)
    return expired


def send_email_job(mail):
    """Deliver one email queued by send_email(sync=False): a QueuedMail (or, queued by an
    earlier version, a dict of send_email's fields)."""
    from app.email import QueuedMail, deliver

    if isinstance(mail, dict):
        mail = QueuedMail(**mail)
    deliver(mail.message())
