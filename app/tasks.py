"""The functions an RQ worker runs. They stay short: the lifecycle is in app/jobs/lifecycle.py and
the export itself in app/exports/. As in the tutorial, this module builds its own app."""

import time

from flask import has_app_context
from rq import get_current_job

from app import db
from app.exports import centre, delivery
from app.exports import formats as exports
from app.exports.storage import cleanup_stale_temp_files
from app.jobs import lifecycle, metrics
from app.jobs.bootstrap import get_worker_app
from app.models import User

app = get_worker_app()
if not has_app_context():  # in a worker process; in-process test workers bring their own
    app.app_context().push()


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
        progress = lifecycle.Progress(total=seconds, unit="seconds")
        for i in range(seconds):
            time.sleep(1)
            progress.update(i + 1)
    except lifecycle.TaskNotActive:  # cancelled: it stops here, and RQ files it as done
        return
    lifecycle.finish("Countdown complete.")


def noop(user_id):
    """Does nothing but go through the lifecycle (for the dispatch benchmark)."""
    lifecycle.start()
    lifecycle.finish()


def export_posts(user_id, export_id=None):
    """Export the user's posts to export storage, in the export's format (JSON for a job
    launched without an export, as in the tutorial), and mail the user a link to download
    it, with posts.json attached when small enough. Cancelled, it stops at its next batch
    and ends cleanly: no file, no mail, the task left `cancelled`."""
    try:
        task = lifecycle.start()
    except lifecycle.TaskNotActive:
        return
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
        written = delivery.write_file(export, attempt, progress.update)
        if written is not None:
            metrics.export_written(app.redis, export.format, written)
        lifecycle.ensure_active()  # cancelled after the last batch: still no mail
        composed = delivery.compose_mail(export)
        # one mail per job, whatever its retries: its id is the key
        job = get_current_job()
        attached = delivery.send_mail(export, job.id if job else export.id, composed)
    except (lifecycle.TaskNotActive, centre.AttemptSuperseded):
        centre.discard_file(export, attempt)
        return
    lifecycle.finish(delivery.finished_message(attached))
    centre.replace_oldest(user)  # only now: a cancelled or failed export replaces nothing


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
