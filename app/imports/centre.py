"""The Import rows and their uploaded archives: the upload stored, the preview recorded,
confirm, cancel, discard and expiry. The only code that changes Import rows (the importer
writes an import's position and counts, in the transaction of each batch it imports).

It knows nothing of the job system, as app/exports/centre.py: the routes (app/imports/
routes.py) ask it, then start or cancel the task through app/jobs/lifecycle.py; the tasks
(app/tasks.py) call it to record what they found. Functions that change rows commit (or leave
the commit to the launch, where they say so), or raise ImportRefused, with the reason a user
reads, having changed nothing.

The archive lives in export storage (app/exports/storage.py: a folder or S3), under
"imports/<user id>/<import id>/archive", from the upload until the import has finished (or
was cancelled, discarded or refused); an upload nobody confirmed goes after
IMPORT_CONFIRM_MINUTES (expire_unconfirmed, the scheduled job).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import BinaryIO

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_babel import gettext as _

from app import db
from app.exports.storage import CHUNK_SIZE, LocalStorage, StorageUnavailable, get_storage
from app.models import Import, ImportProblem, Task, TaskStatus, User, utcnow
from app.template_filters import file_size

log = logging.getLogger(__name__)

TASK_PREVIEW = "preview_import"
TASK_IMPORT = "import_posts"  # one import at a time per user (the task's unique constraint)
HISTORY_LIMIT = 50

# A warning of the preview, recorded in English (the worker has no user's language) and
# translated when shown (preview_warnings).
OTHER_ACCOUNT = "This is an archive of @%(account)s, not of you (@%(username)s)."


class ImportRefused(Exception):
    """The action was refused; str(exc) says why, for the user (translated). `kind` names the
    reason for programs (the API's problem types: docs/api.md)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ArchiveMissing(FileNotFoundError):
    """The uploaded archive is no longer in storage (expired, discarded, or removed by
    hand): the task fails, saying so; trying again cannot help."""

    user_reason = "The uploaded archive is no longer available. Please upload it again."


# --------------------------------------------------------------------------- reading

def imports_of(user: User, limit: int = HISTORY_LIMIT) -> list[Import]:
    """The user's imports, newest first, with their tasks (one query)."""
    return list(db.session.scalars(
        sa.select(Import).where(Import.user_id == user.id)
        .options(so.joinedload(Import.task))
        .order_by(Import.created_at.desc(), Import.id).limit(limit)))


def own_import(user: User, import_id: str) -> Import | None:
    """The import with this id if it is the user's; None otherwise (the routes answer 404
    alike for another user's import and one that never existed)."""
    imp = db.session.get(Import, import_id)
    if imp is None or imp.user_id != user.id:
        return None
    return imp


def problems_of(imp: Import) -> Iterator[ImportProblem]:
    """The import's problems (posts that failed, followed accounts not found), in the
    archive's order, read in batches (an archive may have many)."""
    return db.session.scalars(
        sa.select(ImportProblem).where(ImportProblem.import_id == imp.id)
        .order_by(ImportProblem.outcome, ImportProblem.item)
        .execution_options(yield_per=1000))


def preview_warnings(imp: Import) -> list[str]:
    """The preview's warnings in the reader's language. (A refused archive's row has no
    preview but its refusal: Import.preview() is {"refused": ...}; see refusal().)"""
    preview = imp.preview() or {}
    shown = []
    params = _other_account_params(imp, preview)
    for warning in preview.get("warnings", []):
        if warning == OTHER_ACCOUNT % params:
            shown.append(_("This is an archive of @%(account)s, not of you (@%(username)s).",
                           **params))
        else:
            shown.append(warning)
    return shown


def other_account_warning(user: User, account: str | None) -> str | None:
    """The English warning when an archive names an account other than the user's (the
    part before any @host, compared case-insensitively), or None."""
    if not account:
        return None
    name = account_name(account)
    if not name or name.lower() == user.username.lower():
        return None
    return OTHER_ACCOUNT % {"account": name, "username": user.username}


def account_name(address: str) -> str:
    """The username in an account address: "@alice@example.org", "alice@example.org" and
    "alice" all name alice."""
    return address.strip().lstrip("@").split("@", 1)[0].strip()


def _other_account_params(imp: Import, preview: dict) -> dict:
    return {"account": account_name(preview.get("account") or ""),
            "username": imp.user.username}


# --------------------------------------------------------------------------- a user's actions
# Each is half of what a route does: the route asks here first, then starts or cancels the
# import's task through the lifecycle (app/imports/actions.py).

def store_upload(user: User, filename: str | None, stream: BinaryIO) -> Import:
    """Stream an uploaded archive into storage and return its Import, not yet saved: the
    route launches the preview task with `attach(imp)`, so both are committed together or
    not at all (when the launch is refused, the route calls remove_file(imp): nothing else
    would find the file). Refused, with nothing stored, for an empty file, a file larger
    than IMPORT_MAX_BYTES (counted as it streams in) and when storage cannot be reached."""
    limit = current_app.config["IMPORT_MAX_BYTES"]
    imp = Import(user_id=user.id, stage=Import.PREVIEW, filename=_shown_name(filename))
    key = storage_key(imp)
    size = 0
    try:
        with get_storage().writer(key) as out:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
                if size > limit:
                    raise ImportRefused(too_large(file_size(limit)), "file-too-large")
                out.write(chunk)
            if size == 0:
                raise ImportRefused(_("The file is empty. Choose the archive to import."),
                                    "empty-file")
    except StorageUnavailable:
        raise ImportRefused(_("The import storage cannot be reached right now. Please try "
                              "again in a few minutes."), "storage-unavailable") from None
    imp.storage_key, imp.size = key, size
    return imp


def too_large(limit: str) -> str:
    """What a user reads about a file past IMPORT_MAX_BYTES (`limit`, in words: "100 MiB"),
    whether it was refused as it streamed in or, larger than it said, before (the 413)."""
    return _("The file is larger than %(size)s, the most an import accepts.", size=limit)


def no_report() -> str:
    """Why an import has no report: it was never confirmed, so nothing was imported."""
    return _("There is no report yet: nothing has been imported from this archive.")


def attach(imp: Import) -> Callable[[Task], None]:
    """For lifecycle.launch: make the new task the import's current one (its preview's, or
    once confirmed its import's)."""
    def attach_to(task: Task) -> None:
        imp.task_id = task.id
        db.session.add(imp)

    return attach_to


def prepare_confirm(imp: Import) -> None:
    """The user pressed Import: refused unless the preview is ready and still waiting
    (IMPORT_CONFIRM_MINUTES). Commits nothing itself: the route then launches the import's
    task with attach(imp), which commits both (a refused launch rolls this back)."""
    if imp.status != Import.READY:
        raise ImportRefused(_("This import cannot be started: it is not waiting for you to "
                              "confirm it."), "import-not-ready")
    if imp.confirm_by is not None and utcnow() >= imp.confirm_by:
        raise ImportRefused(_("This upload has expired. Please upload the archive again."),
                            "import-expired")
    imp.stage = Import.IMPORT
    imp.confirmed_at = utcnow()


def cancellable_task(imp: Import) -> Task:
    """The import's task (its preview's or its import's), if a cancel can still stop it;
    refused when it has ended."""
    task = imp.task
    if task is None or task.complete:
        raise ImportRefused(_("This import has already ended; there is nothing to cancel."),
                            "import-ended")
    return task


def after_cancel(imp: Import) -> None:
    """Tidy up after the import's task was cancelled: its archive goes (a running import
    reads a copy it has open, and stops at its next batch). The posts it imported before
    stay, and the row says how many. Commits."""
    try:
        remove_file(imp)
        db.session.commit()
    except StorageUnavailable as exc:  # the scheduled expiry removes it later
        db.session.rollback()
        log.warning("Import %s cancelled; its archive stays until the expiry: %s", imp.id, exc)
    log.info("Import %s cancelled by its user", imp.id)


def discard(imp: Import) -> None:
    """The user drops an upload they were shown the preview of, without importing it: its
    archive goes now, and the row reads "cancelled" (Import.status: expired before its
    confirm_by). Refused for an import that is not waiting to be confirmed. Commits."""
    if imp.status != Import.READY:
        raise ImportRefused(_("Only an upload waiting for you to confirm it can be "
                              "discarded."), "import-not-ready")
    with _refused_while_storage_is_down():
        remove_file(imp)
    imp.expired_at = utcnow()
    db.session.commit()
    log.info("Import %s discarded by its user", imp.id)


# --------------------------------------------------------------------------- worker side

def record_preview(imp: Import, preview: dict, kind: str) -> None:
    """The worker's record of the archive read (app/imports/importer.build_preview): the
    upload now waits IMPORT_CONFIRM_MINUTES for its user. Commits."""
    imp.preview_json = json.dumps(preview)
    imp.kind = kind
    minutes = current_app.config["IMPORT_CONFIRM_MINUTES"]
    imp.confirm_by = utcnow() + timedelta(minutes=minutes)
    db.session.commit()


def record_refusal(imp: Import, exc: Exception) -> None:
    """The archive was refused (readers.ArchiveRefused): the whole reason is kept on the row
    (preview_json {"refused": {"template", "params"}}: a task's reason is cut at 255
    characters; refusal() reads it back translated) and the archive goes at once. Commits."""
    db.session.rollback()
    imp.preview_json = json.dumps({"refused": {
        "template": getattr(exc, "template", str(exc)), "params": getattr(exc, "params", {})}})
    try:
        remove_file(imp)
    except StorageUnavailable as err:  # the scheduled expiry removes it
        log.warning("Import %s refused; its archive stays until the expiry: %s", imp.id, err)
    db.session.commit()


def refusal(imp: Import) -> str | None:
    """Why the archive was refused, whole, in the reader's language (None: it was not)."""
    refused = (imp.preview() or {}).get("refused")
    if not refused:
        return None
    params = dict(refused.get("params") or {})
    if "reason" in params:
        params["reason"] = _(params["reason"])
    try:
        return _(refused["template"], **params) if params else _(refused["template"])
    except (KeyError, ValueError, TypeError):
        return refused["template"]


def record_finished(imp: Import) -> None:
    """Every item of the archive was dealt with: the import is done and its archive goes at
    once (kept when storage cannot be reached: the scheduled expiry removes it). Commits;
    again on a retried task, it changes nothing."""
    if imp.finished_at is None:
        imp.finished_at = utcnow()
        db.session.commit()
    try:
        remove_file(imp)
        db.session.commit()
    except StorageUnavailable as exc:
        db.session.rollback()
        log.warning("Import %s finished; its archive stays until the expiry: %s", imp.id, exc)


@contextmanager
def local_archive(imp: Import) -> Iterator[str]:
    """The uploaded archive as a file on this machine, for a reader to open: the stored
    file itself in a folder storage, or a temporary copy downloaded from S3 (removed
    afterwards). Raises ArchiveMissing when it is no longer stored."""
    storage = get_storage()
    if not imp.storage_key:
        raise ArchiveMissing(f"import {imp.id} has no archive in storage")
    if isinstance(storage, LocalStorage):
        path = storage.path(imp.storage_key)
        if not path.is_file():
            raise ArchiveMissing(f"import {imp.id}: no file at {imp.storage_key}")
        yield str(path)
        return
    folder = current_app.config["EXPORT_FOLDER"]
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="import.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for chunk in storage.read(imp.storage_key):
                    out.write(chunk)
            except FileNotFoundError as exc:
                raise ArchiveMissing(f"import {imp.id}: {exc}") from exc
        yield tmp
    finally:
        os.unlink(tmp)


def remove_file(imp: Import) -> None:
    """Remove the import's archive from storage (the caller commits the row). Raises
    StorageUnavailable."""
    if imp.storage_key:
        get_storage().delete(imp.storage_key)
        imp.storage_key = None


def expire_unconfirmed(now: datetime | None = None) -> int:
    """The scheduled job: uploads not confirmed by their confirm_by expire (their archive
    goes, the row reads "expired"); and the archives left by imports that ended without
    removing theirs (a preview that failed, an import cancelled or finished while storage
    was down) go once they have been over for IMPORT_CONFIRM_MINUTES (time
    for an operator to retry the task). Returns how many uploads expired."""
    now = now or utcnow()
    expired = 0
    due = (sa.select(Import).outerjoin(Task, Task.id == Import.task_id)
           .where(Import.expired_at.is_(None), Import.stage == Import.PREVIEW,
                  Import.confirm_by <= now,
                  sa.or_(Task.id.is_(None), Task.status == TaskStatus.FINISHED)))
    for imp in db.session.scalars(due.limit(500)).all():
        if _without_file(imp):
            imp.expired_at = now
            expired += 1
    grace = timedelta(minutes=current_app.config["IMPORT_CONFIRM_MINUTES"])
    ended = (sa.select(Import).outerjoin(Task, Task.id == Import.task_id)
             .where(Import.storage_key.is_not(None),
                    sa.or_(sa.and_(Task.status.in_((TaskStatus.FAILED, TaskStatus.CANCELLED)),
                                   Task.finished_at <= now - grace),
                           sa.and_(Import.stage == Import.IMPORT,
                                   Task.status == TaskStatus.FINISHED))))
    for imp in db.session.scalars(ended.limit(500)).all():
        _without_file(imp)
    db.session.commit()
    if expired:
        log.info("Expired %d unconfirmed import(s)", expired)
    return expired


def storage_key(imp: Import) -> str:
    return f"imports/{imp.user_id}/{imp.id}/archive"


# --------------------------------------------------------------------------- helpers

def _without_file(imp: Import) -> bool:
    """Remove the import's archive; when storage cannot be reached, leave it for the next
    run (returns False)."""
    try:
        remove_file(imp)
    except StorageUnavailable as exc:
        log.warning("Import %s: archive not removed yet, storage unavailable: %s", imp.id, exc)
        return False
    return True


def _shown_name(filename: str | None) -> str | None:
    """The browser's name for the file, to show (never a path): its last part, cut to the
    column."""
    if not filename:
        return None
    return filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or None


@contextmanager
def _refused_while_storage_is_down() -> Iterator[None]:
    try:
        yield
    except StorageUnavailable:
        db.session.rollback()
        raise ImportRefused(_("The import storage cannot be reached right now. Please try "
                              "again in a few minutes."), "storage-unavailable") from None
