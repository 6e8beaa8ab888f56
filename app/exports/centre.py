"""The Export rows and their files: what may be done to an export (format, cooldown, state),
the worker's record of the finished file, after which the oldest beyond EXPORT_KEEP are
replaced, and expiry. The only code that changes Export rows.

It knows nothing of the job system: the routes (app/exports/routes.py) ask it, then start or
cancel the task through app/jobs/lifecycle.py; the task (app/tasks.py) calls it to record
what it wrote. Functions that change rows commit, or raise ExportRefused, with the reason a
user reads, having changed nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_babel import gettext as _

from app import db
from app.exports.formats import FORMATS
from app.exports.storage import StorageUnavailable, get_storage
from app.models import Export, Task, TaskStatus, User, utcnow

log = logging.getLogger(__name__)

TASK_NAME = "export_posts"  # one export at a time per user, whatever its format
HISTORY_LIMIT = 50


class ExportRefused(Exception):
    """The action was refused; str(exc) says why, for the user. `kind` names the reason for
    programs (the API's problem types: docs/api.md), `retry_after` when it is a wait, in
    seconds."""

    def __init__(self, message: str, kind: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class AttemptSuperseded(Exception):
    """The attempt (task) writing an export is no longer its current one: recording nothing."""


@dataclass(frozen=True)
class Superseded:
    """Why a task is no longer the current attempt at the export it works on: the export was
    tried again as a newer task (`newer_task_id`), or it was deleted (None)."""

    task_id: str
    export_id: str
    newer_task_id: str | None

    def __str__(self) -> str:
        if self.newer_task_id is None:
            return f"task {self.task_id} worked on export {self.export_id}, which was deleted"
        return (f"task {self.task_id} is no longer its export's current attempt: export "
                f"{self.export_id} was tried again as task {self.newer_task_id}")


def attempt_superseded(task_id: str | None, export: Export | None,
                       export_id: str | None = None) -> Superseded | None:
    """The rule, for a task and the export it works on (None: that export is gone): an
    export's current attempt is the task its row points at (Export.task_id); every other
    task that worked on it is an old attempt, and must neither be run again nor change the
    export (its file is a newer attempt's). No query."""
    if export is None:
        return Superseded(task_id or "-", export_id or "-", None)
    if export.task_id != task_id:
        return Superseded(task_id or "-", export.id, export.task_id)
    return None


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


# --------------------------------------------------------------------------- a user's actions
# Each is half of what a route does: the route asks here first, then starts or cancels the
# export's task through the lifecycle (app/exports/routes.py).

def new_export(user: User, fmt: str) -> Export:
    """An export of the user's posts in format `fmt`, not yet saved: the route launches its
    task with `attach(export)`, so both are committed together or not at all. Refused for an
    unknown format and during the cooldown. The oldest finished export beyond EXPORT_KEEP is
    removed only when this one has finished (replace_oldest)."""
    if fmt not in FORMATS:
        raise ExportRefused(_("Unknown export format."), "unknown-format")
    _check_cooldown(user)
    return Export(user_id=user.id, format=fmt, filename=FORMATS[fmt].filename)


def attach(export: Export) -> Callable[[Task], None]:
    """For lifecycle.launch: make `export` the new task's export (its current attempt)."""
    def attach_to(task: Task) -> None:
        export.task_id = task.id
        db.session.add(export)

    return attach_to


def prepare_retry(export: Export) -> None:
    """Make a failed or cancelled export ready to run again (a new attempt: the route then
    launches a new task): its earlier attempt's file goes. Commits nothing itself; the launch
    does."""
    if export.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise ExportRefused(_("Only a failed or cancelled export can be tried again."),
                            "export-not-retryable")
    _check_cooldown(export.user)
    with _refused_while_storage_is_down():
        _remove_file(export)  # a file an earlier attempt wrote before it failed
    export.posts_count = export.size = None
    export.finished_at = export.expires_at = None


def cancellable_task(export: Export) -> Task:
    """The export's task, if a cancel can still stop it; refused when it has ended."""
    task = export.task
    if task is None or task.complete:
        raise ExportRefused(_("This export has already ended; there is nothing to cancel."),
                            "export-ended")
    return task


def after_cancel(export: Export, was_running: bool) -> None:
    """Tidy up after the export's task was cancelled: one that was waiting (for a retry after
    its mail failed) may have left its file; a running one removes its own."""
    if not was_running:
        try:
            _remove_file(export)
            db.session.commit()
        except StorageUnavailable as exc:  # it expires with its retention instead
            db.session.rollback()
            log.warning("Export %s cancelled; its file stays until it expires: %s",
                        export.id, exc)
    log.info("Export %s cancelled by its user", export.id)


def remove(export: Export) -> None:
    """Remove the export from the history and its file from storage, at once (the route has
    cancelled its task first, if it was in progress)."""
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
    """The worker's record of a finished file (before the task finishes). Raises
    AttemptSuperseded, recording nothing, when `attempt` (the task that wrote it) is no
    longer the export's current attempt: the export was tried again while it wrote, and the
    row is the newer attempt's. One UPDATE that checks and records at once."""
    now = utcnow()
    current = Export.task_id == attempt if attempt is not None else Export.task_id.is_(None)
    recorded = db.session.execute(
        sa.update(Export).where(Export.id == export.id, current)
        .values(storage_key=storage_key, posts_count=posts_count, size=size, finished_at=now,
                expires_at=now + timedelta(days=current_app.config["EXPORT_RETENTION_DAYS"]))
        .execution_options(synchronize_session=False, changes_owner=export.user_id)).rowcount
    if not recorded:
        db.session.rollback()
        raise AttemptSuperseded(f"export {export.id} was tried again while task {attempt} "
                                "wrote its file")
    db.session.commit()


def export_for_job(user: User, task: Task | None, export_id: str | None) -> Export | None:
    """The export a worker's job builds: the export centre's (`export_id`; None when it was
    deleted), or for a job launched without one (the seed's `user.launch_task("export_posts",
    ...)`, or a job enqueued by hand) a JSON export recorded now, so that it too has a
    download page. A retry of that job finds the export its first attempt recorded."""
    if export_id is not None:
        return db.session.get(Export, export_id)
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
    if attempt_superseded(attempt, db.session.get(Export, export.id), export.id):
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
                              time=at.strftime("%Y-%m-%d %H:%M")), "export-cooldown",
                            retry_after=max(1, ceil((at - utcnow()).total_seconds())))


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
                              "again in a few minutes."), "storage-unavailable") from None


def _remove_file(export: Export) -> None:
    if export.storage_key:
        get_storage().delete(export.storage_key)
        export.storage_key = None
