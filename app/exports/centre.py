"""An export's life in the export centre: start (format, cooldown), cancel, retry, delete,
expire; and the worker's record of the finished file, after which the oldest beyond
EXPORT_KEEP are replaced. The only code that
changes Export rows. Task states change through app/jobs/lifecycle.py, as everywhere.

Every function commits (or raises ExportRefused, with the reason a user reads, having
changed nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_babel import gettext as _

from app import db
from app.exports.formats import FORMATS
from app.exports.storage import StorageUnavailable, get_storage
from app.jobs import lifecycle
from app.models import Export, Task, TaskStatus, User, utcnow

log = logging.getLogger(__name__)

TASK_NAME = "export_posts"  # one export at a time per user, whatever its format
HISTORY_LIMIT = 50


class ExportRefused(Exception):
    """The action was refused; str(exc) says why, for the user."""


# --------------------------------------------------------------------------- reading

def exports_of(user: User, limit: int = HISTORY_LIMIT) -> list[Export]:
    """The user's exports, newest first, with their tasks (one query)."""
    return list(db.session.scalars(
        sa.select(Export).where(Export.user_id == user.id)
        .options(so.joinedload(Export.task))
        .order_by(Export.created_at.desc(), Export.id).limit(limit)))


def own_export(user: User, export_id: str) -> Export | None:
    """The export with this id if it is the user's; None otherwise (the routes answer 404
    alike for another user's export and one that never existed)."""
    export = db.session.get(Export, export_id)
    if export is None or export.user_id != user.id:
        return None
    return export


def next_export_at(user: User) -> datetime | None:
    """When the user may start another export (EXPORT_COOLDOWN after their last successful
    one), or None when they may now. Failed and cancelled exports do not count."""
    cooldown = current_app.config["EXPORT_COOLDOWN"]
    if cooldown <= 0:
        return None
    last = db.session.scalar(
        sa.select(sa.func.max(Task.finished_at)).select_from(Export)
        .join(Task, Task.id == Export.task_id)
        .where(Export.user_id == user.id, Task.status == TaskStatus.FINISHED))
    if last is None:
        return None
    at = last + timedelta(seconds=cooldown)
    return at if at > utcnow() else None


# --------------------------------------------------------------------------- actions

def start(user: User, fmt: str) -> Export:
    """Start an export of the user's posts in format `fmt`. Refused for an unknown format,
    during the cooldown, while another export is queued or running, or when the job queue
    is down (the export is then recorded as failed, saying so). The oldest finished export
    beyond EXPORT_KEEP is removed only when this one has finished (replace_oldest)."""
    if fmt not in FORMATS:
        raise ExportRefused(_("Unknown export format."))
    _check_cooldown(user)
    export = Export(user_id=user.id, format=fmt, filename=FORMATS[fmt].filename)
    _launch(user, export)
    log.info("Export %s (%s) started for user %s", export.id, fmt, user.id)
    return export


def retry(export: Export) -> Export:
    """Run a failed or cancelled export again (a new attempt, a new task)."""
    if export.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise ExportRefused(_("Only a failed or cancelled export can be tried again."))
    _check_cooldown(export.user)
    with _refused_while_storage_is_down():
        _remove_file(export)  # a file an earlier attempt wrote before it failed
    export.posts_count = export.size = None
    export.finished_at = export.expires_at = None
    _launch(export.user, export)
    return export


def cancel(export: Export) -> None:
    """Cancel a queued export (it never starts) or a running one (it stops within a batch,
    removes its partial file and sends no mail)."""
    task = export.task
    if task is None or task.complete:
        raise ExportRefused(_("This export has already ended; there is nothing to cancel."))
    running = task.status == TaskStatus.RUNNING
    try:
        lifecycle.cancel(task, _("Cancelled by you."))
    except lifecycle.TaskNotActive:
        raise ExportRefused(
            _("This export has already ended; there is nothing to cancel.")) from None
    if not running:  # waiting for a retry after its mail failed: its file may be there
        try:
            _remove_file(export)
            db.session.commit()
        except StorageUnavailable as exc:  # it expires with its retention instead
            db.session.rollback()
            log.warning("Export %s cancelled; its file stays until it expires: %s",
                        export.id, exc)
    log.info("Export %s cancelled by its user", export.id)


def delete(export: Export) -> None:
    """Remove the export from the history and its file from storage, at once. A queued or
    running export is cancelled first."""
    task = export.task
    if task is not None and not task.complete:
        try:
            lifecycle.cancel(task, _("Cancelled by you."))
        except lifecycle.TaskNotActive:
            pass
    with _refused_while_storage_is_down():
        _remove_file(export)
    db.session.delete(export)
    db.session.commit()
    log.info("Export %s deleted by its user", export.id)


def expire_due(now: datetime | None = None) -> int:
    """Remove the files of exports past their expiry (EXPORT_RETENTION_DAYS); their rows stay,
    "expired". The scheduled job. Returns how many expired."""
    now = now or utcnow()
    expired = 0
    due = sa.select(Export).where(Export.expires_at <= now, Export.expired_at.is_(None))
    for export in db.session.scalars(due.limit(500)).all():
        if _expire(export, now):
            expired += 1
    db.session.commit()
    if expired:
        log.info("Expired %d export(s)", expired)
    return expired


def record_file(export: Export, attempt: str | None, storage_key: str, posts_count: int,
                size: int) -> None:
    """The worker's record of a finished file (before lifecycle.finish ends the task). Raises
    lifecycle.TaskNotActive, recording nothing, when `attempt` (the task that wrote it) is no
    longer the export's current attempt: the export was tried again while it wrote, and the
    row is the newer attempt's. One UPDATE that checks and records at once."""
    now = utcnow()
    current = Export.task_id == attempt if attempt is not None else Export.task_id.is_(None)
    recorded = db.session.execute(
        sa.update(Export).where(Export.id == export.id, current)
        .values(storage_key=storage_key, posts_count=posts_count, size=size, finished_at=now,
                expires_at=now + timedelta(days=current_app.config["EXPORT_RETENTION_DAYS"]))
        .execution_options(synchronize_session=False)).rowcount
    if not recorded:
        db.session.rollback()
        raise lifecycle.TaskNotActive(f"export {export.id} was tried again while task {attempt} "
                                 "wrote its file")
    db.session.commit()


def export_for_job(user: User, task: Task | None, export_id: str | None) -> Export:
    """The export a worker's job builds: the export centre's (`export_id`), or for a job
    launched without one (the seed's `user.launch_task("export_posts", ...)`, or a job
    enqueued by hand) a JSON export recorded now, so that it too has a download page.
    A retry of that job finds the export its first attempt recorded."""
    if export_id is not None:
        export = db.session.get(Export, export_id)
        lifecycle.end_if_superseded(task, export, export_id)
        if export is None:
            raise LookupError(f"export {export_id} does not exist")
        return export
    if task is not None:
        export = db.session.scalar(sa.select(Export).where(Export.task_id == task.id))
        if export is not None:
            return export
    export = Export(user_id=user.id, format="json", filename=FORMATS["json"].filename,
                    task_id=task.id if task is not None else None)
    db.session.add(export)
    db.session.commit()
    return export


def discard_file(export: Export, attempt: str | None) -> None:
    """Remove what a cancelled attempt wrote: its file, and when it is still the export's
    current attempt, the row's record of it. An old attempt (the export was tried again
    since) leaves the row and the newer attempt's file alone."""
    db.session.rollback()  # the row as it is now, not as the attempt first read it
    own_key = storage_key(export, attempt)
    if lifecycle.attempt_superseded(attempt, db.session.get(Export, export.id), export.id):
        get_storage().delete(own_key)
        return
    if export.storage_key != own_key:  # written, not yet recorded
        get_storage().delete(own_key)
    _remove_file(export)
    export.posts_count = export.size = None
    export.finished_at = export.expires_at = None
    db.session.commit()


def storage_key(export: Export, attempt: str | None) -> str:
    """Where an attempt (a task) writes the export's file in storage: a key of its own, so
    that an old attempt still writing can never replace a newer attempt's file."""
    if attempt is None:  # a job enqueued by hand, without a task
        return f"{export.user_id}/{export.id}/{export.filename}"
    return f"{export.user_id}/{export.id}/{attempt}/{export.filename}"


# --------------------------------------------------------------------------- helpers

def _check_cooldown(user: User) -> None:
    at = next_export_at(user)
    if at is not None:
        raise ExportRefused(_("You can start your next export at %(time)s UTC.",
                              time=at.strftime("%Y-%m-%d %H:%M")))


def _launch(user: User, export: Export) -> None:
    def attach(task: Task) -> None:
        export.task_id = task.id
        db.session.add(export)

    try:
        lifecycle.launch(user, TASK_NAME, _("Exporting posts..."), export.id, attach=attach)
    except lifecycle.TaskAlreadyRunning:
        raise ExportRefused(_("An export task is currently in progress")) from None
    except lifecycle.JobsUnavailable:
        raise ExportRefused(str(lifecycle.JOBS_UNAVAILABLE)) from None


def replace_oldest(user: User) -> int:
    """Keep the EXPORT_KEEP newest finished exports with files (one at least: the one that
    just finished): remove the files of older ones, whose rows then read "replaced by a
    newer export". Run by the worker when an export has finished, never when one starts, so
    that an export that is then cancelled or fails replaces nothing. Returns how many went."""
    keep = max(current_app.config["EXPORT_KEEP"], 1)
    finished = db.session.scalars(
        sa.select(Export).join(Task, Task.id == Export.task_id)
        .where(Export.user_id == user.id, Export.expired_at.is_(None),
               Task.status == TaskStatus.FINISHED)
        .order_by(Export.finished_at.desc(), Export.id)).all()
    now = utcnow()
    replaced = sum(_expire(export, now) for export in finished[keep:])
    db.session.commit()
    if replaced:
        log.info("Replaced %d older export(s) of user %s", replaced, user.id)
    return replaced


def _expire(export: Export, now: datetime) -> bool:
    """Remove the export's file and mark it expired (before its retention ran out: replaced,
    see Export.status); when the storage cannot be reached, leave both for the next run of
    the scheduled job (returns False)."""
    try:
        _remove_file(export)
    except StorageUnavailable as exc:
        log.warning("Export %s not expired yet, the storage is unavailable: %s", export.id, exc)
        return False
    export.expired_at = now
    return True


@contextmanager
def _refused_while_storage_is_down() -> Iterator[None]:
    try:
        yield
    except StorageUnavailable:
        db.session.rollback()
        raise ExportRefused(_("The export storage cannot be reached right now. Please try "
                              "again in a few minutes.")) from None


def _remove_file(export: Export) -> None:
    if export.storage_key:
        get_storage().delete(export.storage_key)
        export.storage_key = None
