"""The functions an RQ worker runs. They stay short: the lifecycle is in app/jobs.py and
the export itself in app/exports/. As in the tutorial, this module builds its own app."""

import gc
import time

# As app/__init__.py does for its own imports: no cyclic collection while the worker's
# modules are imported and its app is built (plain `rq worker` does this in every work
# horse); then what they made is frozen, so that the job's collections do not walk it.
_collecting = gc.isenabled()
gc.disable()

from flask import has_app_context  # noqa: E402
from rq import get_current_job  # noqa: E402

from app import db, jobs  # noqa: E402
from app.exports import centre, delivery  # noqa: E402
from app.exports import formats as exports  # noqa: E402
from app.exports.storage import cleanup_stale_temp_files  # noqa: E402
from app.models import User  # noqa: E402
from app.worker_app import get_worker_app  # noqa: E402

app = get_worker_app()
if not has_app_context():  # in a worker process; in-process test workers bring their own
    app.app_context().push()
if _collecting:
    gc.freeze()
    gc.enable()


def _set_task_progress(progress: float) -> None:
    """The tutorial's helper: job.meta, Task row and `task_progress` notification."""
    jobs.set_progress(progress)


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
        jobs.start()
    except jobs.TaskNotActive:
        return
    progress = jobs.Progress(total=seconds, unit="seconds")
    for i in range(seconds):
        time.sleep(1)
        progress.update(i + 1)
    jobs.finish("Countdown complete.")


def noop(user_id):
    """Does nothing but go through the lifecycle (for the dispatch benchmark)."""
    jobs.start()
    jobs.finish()


def export_posts(user_id, export_id=None):
    """Export the user's posts to export storage, in the export's format (JSON for a job
    launched without an export, as in the tutorial), and mail the user a link to download
    it, with posts.json attached when small enough. Cancelled, it stops at its next batch
    and ends cleanly: no file, no mail, the task left `cancelled`."""
    try:
        task = jobs.start()
    except jobs.TaskNotActive:
        return
    user = db.session.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    export = centre.export_for_job(user, task, export_id)
    try:
        progress = jobs.Progress(total=exports.count_posts(user), unit="posts")
        delivery.write_file(export, progress.update)
        jobs.ensure_active()  # cancelled after the last batch: still no mail
        job = get_current_job()  # one mail per job, whatever its retries: its id is the key
        attached = delivery.send_mail(export, mail_key=job.id if job else export.id)
    except jobs.TaskNotActive:
        centre.discard_file(export)
        return
    jobs.finish(delivery.finished_message(attached))


# A temporary export file nobody wrote to for this long was left by a killed worker.
STALE_TEMP_FILE_AGE = 24 * 3600


def expire_exports():
    """Scheduled (app/cron.py): remove the files of exports past EXPORT_RETENTION_DAYS, and
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
