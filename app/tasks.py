"""The functions an RQ worker runs. They stay short: the lifecycle is in app/jobs.py and
the export itself in app/exports/. As in the tutorial, this module builds its own app."""

import time

from flask import current_app, has_app_context, render_template
from rq import get_current_job

from app import db, jobs, metrics
from app.email import send_email_once
from app.exports import centre
from app.exports import formats as exports
from app.exports.storage import get_storage
from app.models import Export, User
from app.worker import get_worker_app

app = get_worker_app()
if not has_app_context():  # in a worker process; in-process test workers bring their own
    app.app_context().push()


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
    progress = jobs.Progress(total=seconds)
    for i in range(seconds):
        time.sleep(1)
        progress.update(i + 1)
    jobs.finish("Countdown complete.")


def noop(user_id):
    """Does nothing but go through the lifecycle (for the dispatch benchmark)."""
    jobs.start()
    jobs.finish()


def export_posts(user_id, export_id=None):
    """Export the user's posts. With `export_id` (the export centre), in that export's format
    to export storage, recorded on the Export row; without (the tutorial's shell session), as
    posts.json attached to the mail."""
    try:
        task = jobs.start()
    except jobs.TaskNotActive:
        return
    user = db.session.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    if export_id is not None:
        _export_to_storage(user, task, export_id)
        return
    progress = jobs.Progress(total=exports.count_posts(user))
    path = exports.write_posts_json(user, progress.update)
    size = path.stat().st_size
    metrics.export_written(current_app.redis, "json", size)
    limit = current_app.config["EXPORT_ATTACHMENT_LIMIT"]
    attach = size <= limit
    attachments = [("posts.json", "application/json", path.read_bytes())] if attach else []
    context = dict(user=user, attached=attach, size=size, limit=limit)
    job = get_current_job()
    send_email_once(
        key=job.id if job else path.name,  # one mail per job: see jobs.record_failure
        subject="[Microblog] Your blog posts",
        sender=current_app.config["ADMINS"][0],
        recipients=[user.email],
        text_body=render_template("email/export_posts.txt", **context),
        html_body=render_template("email/export_posts.html", **context),
        attachments=attachments)
    path.unlink(missing_ok=True)
    if task is not None:
        jobs.finish("Your posts were exported. Check your email." if attach else
                    "Your posts were exported, but were too large to attach. Check your email.")


def _export_to_storage(user, task, export_id):
    # A first version (the mail with a link and the cancel cleanup come next).
    export = db.session.get(Export, export_id)
    if export is None:
        raise LookupError(f"export {export_id} does not exist")
    progress = jobs.Progress(total=exports.count_posts(user))
    key = centre.storage_key(export)
    storage = get_storage()
    with storage.writer(key) as out:
        posts = exports.write_export(export.format, user, out, progress.update)
    size = storage.size(key)
    metrics.export_written(current_app.redis, export.format, size)
    centre.record_file(export, key, posts, size)
    jobs.finish("Your posts were exported.")


def send_email_job(mail):
    """Deliver one email queued by send_email(sync=False): a QueuedMail (or, queued by an
    earlier version, a dict of send_email's fields)."""
    from app.email import QueuedMail, deliver

    if isinstance(mail, dict):
        mail = QueuedMail(**mail)
    deliver(mail.message())
