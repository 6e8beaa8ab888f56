"""The functions an RQ worker runs. They stay short: the lifecycle is in app/jobs/lifecycle.py,
the export itself in app/exports/ and the import in app/imports/. As in the tutorial, this
module builds its own app."""

import time

from flask import has_app_context
from rq import get_current_job

from app import db
from app.exports import centre, delivery
from app.exports import formats as exports
from app.exports.storage import cleanup_stale_temp_files
from app.imports import centre as imports
from app.imports import importer
from app.imports.readers import ArchiveRefused, Limits, open_archive
from app.jobs import lifecycle, metrics
from app.jobs.bootstrap import get_worker_app
from app.models import ApiToken, Import, Task, TaskStatus, User

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


# Recorded in English, shown translated (app/jobs/failures.py).
NOT_THE_CURRENT_STEP = "Replaced by a newer step of the same import."


def _import_for_job(import_id: str) -> tuple[Task | None, Import]:
    """Start the job's task and find its import. Raises TaskNotActive when the task has
    ended, or is no longer its import's current step (an operator ran an old preview
    again): it is then ended, cancelled, saying so."""
    task = lifecycle.start()
    imp = db.session.get(Import, import_id)
    if imp is None:
        raise LookupError(f"import {import_id} does not exist")
    if task is not None and imp.task_id != task.id:
        lifecycle.end(task, TaskStatus.CANCELLED, error=NOT_THE_CURRENT_STEP)
        raise lifecycle.TaskNotActive(f"task {task.id} is not import {imp.id}'s current step")
    return task, imp


def preview_import(user_id, import_id):
    """Read an uploaded archive and record what importing it would do (nothing is written
    to the account): the user then confirms, or not. An archive that is not one we read, or
    breaks a limit, fails the task with the reason (ArchiveRefused, never retried) and its
    file goes at once."""
    try:
        task, imp = _import_for_job(import_id)
    except lifecycle.TaskNotActive:
        return
    limits = Limits.from_config(app.config)
    try:
        with imports.local_archive(imp) as path, open_archive(path, limits) as archive:
            preview = importer.build_preview(imp, archive, lambda read: lifecycle.ensure_active())
            kind = archive.kind
        lifecycle.ensure_active()
    except lifecycle.TaskNotActive:  # cancelled: the cancel removed the file
        return
    except ArchiveRefused as exc:
        imports.record_refusal(imp, exc)
        raise
    imports.record_preview(imp, preview, kind)
    lifecycle.finish(importer.preview_message(preview))


def import_posts(user_id, import_id):
    """Import a confirmed archive's posts into the user's account, in batches, each
    committed with its place in the archive: killed, the task is retried by RQ and goes on
    where it stopped, each post imported once. Cancelled, it stops after the batch it is
    in; the posts imported stay. Done: the archive goes, one mail, the task finished."""
    try:
        task, imp = _import_for_job(import_id)
    except lifecycle.TaskNotActive:
        return
    if imp.finished_at is None:  # else: a retry after the mail failed
        preview = imp.preview() or {}
        progress = lifecycle.Progress(total=preview.get("items") or 0, unit="posts")
        limits = Limits.from_config(app.config)
        try:
            with imports.local_archive(imp) as path, open_archive(path, limits) as archive:
                importer.run_import(imp, archive, progress.update)
            lifecycle.ensure_active()  # cancelled after the last batch: no mail
        except lifecycle.TaskNotActive:
            return
        imports.record_finished(imp)
    job = get_current_job()
    importer.send_done_mail(imp, job.id if job else imp.id)
    lifecycle.finish(importer.finished_message(imp))


def purge_expired_tokens():
    """Scheduled (app/jobs/cron.py): API tokens expired for ApiToken.KEPT_AFTER_EXPIRY go (the
    settings page lists them until then)."""
    return ApiToken.purge_expired()


def expire_imports():
    """Scheduled (app/jobs/cron.py): uploads not confirmed within IMPORT_CONFIRM_MINUTES
    expire and their archives go; so do archives left by imports that ended without
    removing theirs."""
    return imports.expire_unconfirmed()


def send_email_job(mail):
    """Deliver one email queued by send_email(sync=False): a QueuedMail (or, queued by an
    earlier version, a dict of send_email's fields). Claimed by its job's id, so that a
    retry after the mail went out (its worker killed before RQ heard) does not send it again."""
    from app.email import QueuedMail, deliver, send_email_once

    if isinstance(mail, dict):
        mail = QueuedMail(**mail)
    job = get_current_job()
    if job is None:
        deliver(mail.message())
        return
    send_email_once(job.id, subject=mail.subject, sender=mail.sender,
                    recipients=mail.recipients, text_body=mail.text_body,
                    html_body=mail.html_body, attachments=mail.attachments)
