"""What a user does to their exports, for every way they reach it: the export centre's pages
(app/exports/routes.py) and the token API (app/api/exports.py) call these same functions, so
both follow one set of rules (format, cooldown, one at a time, owner-only) and give the same
reasons.

Each action asks the centre (app/exports/centre.py) whether it may, then launches or cancels
the export's task through app/jobs/lifecycle.py. A refusal raises centre.ExportRefused with
the reason a user reads (translated), having changed nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flask import Response
from flask_babel import _
from werkzeug.exceptions import NotFound

from app.exports import centre
from app.exports.download import RETRY_AFTER, TooManyDownloads, counted_download, download_response
from app.exports.formats import FORMATS
from app.exports.storage import StorageUnavailable, get_storage
from app.jobs import lifecycle
from app.models import Export, TaskStatus, User, utcnow

log = logging.getLogger(__name__)

# Recorded in English, shown translated (app/jobs/failures.py).
CANCELLED_BY_YOU = "Cancelled by you."


def start_export(user: User, fmt: str) -> Export:
    """Start an export of the user's posts in format `fmt`. Refused for an unknown format,
    during the cooldown, while another export is queued or running, or when the job queue
    is down (the export is then recorded as failed, saying so)."""
    export = centre.new_export(user, fmt)
    _launch(user, export)
    log.info("Export %s (%s) started for user %s", export.id, fmt, user.id)
    return export


def retry_export(export: Export) -> Export:
    """Run a failed or cancelled export again: a new attempt, as a new task."""
    centre.prepare_retry(export)
    _launch(export.user, export)
    return export


def cancel_export(export: Export) -> None:
    """Cancel a queued export (it never starts) or a running one (it stops within a batch,
    removes its partial file and sends no mail)."""
    task = centre.cancellable_task(export)
    running = task.status == TaskStatus.RUNNING
    try:
        lifecycle.cancel(task, CANCELLED_BY_YOU)
    except lifecycle.TaskNotActive:
        raise centre.ExportRefused(
            _("This export has already ended; there is nothing to cancel."),
            "export-ended") from None
    centre.after_cancel(export, running)


def delete_export(export: Export) -> None:
    """Remove the export from the history and its file from storage, at once. A queued or
    running export is cancelled first."""
    task = export.task
    if task is not None and not task.complete:
        try:
            lifecycle.cancel(task, CANCELLED_BY_YOU)
        except lifecycle.TaskNotActive:
            pass
    centre.remove(export)


def _launch(user: User, export: Export) -> None:
    try:
        lifecycle.launch(user, centre.TASK_NAME, _("Exporting posts..."), export.id,
                         attach=centre.attach(export))
    except lifecycle.TaskAlreadyRunning:
        raise centre.ExportRefused(_("An export task is currently in progress"),
                                   "export-in-progress") from None
    except lifecycle.JobsUnavailable:
        raise centre.ExportRefused(_(lifecycle.JOBS_UNAVAILABLE), "jobs-unavailable") from None


# --------------------------------------------------------------------------- the file

ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)


@dataclass
class NoFile(Exception):
    """Why an export has no file to download: the HTTP status and the reason a user reads
    (`kind` names the reason for programs: the API's problem type), with the headers that go
    with it (Retry-After)."""

    status: int
    kind: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def past_expiry(export: Export) -> bool:
    """Expired or replaced, or due to expire (the scheduled expiry has not run yet)."""
    return export.status in (Export.EXPIRED, Export.REPLACED) or (
        export.expires_at is not None and export.expires_at <= utcnow())


def downloadable(export: Export) -> bool:
    return (export.status == TaskStatus.FINISHED and export.storage_key is not None
            and not past_expiry(export))


def no_file(export: Export) -> NoFile | None:
    """Why the export cannot be downloaded now, or None when it can."""
    if export.status == Export.REPLACED:
        return NoFile(410, "export-replaced", _(
            "This export was replaced by a newer export and its file was deleted (you keep "
            "your newest ones). You can download those below."))
    if past_expiry(export):
        return NoFile(410, "export-expired", _(
            "This export has expired and its file was deleted. You can start a new one "
            "below."))
    if downloadable(export):
        return None
    if export.status in ACTIVE:
        return NoFile(409, "export-not-ready", _(
            "This export is not ready yet. It can be downloaded here once it is finished."))
    if export.status == TaskStatus.CANCELLED:
        return NoFile(409, "export-cancelled",
                      _("This export was cancelled: it has no file to download."))
    return NoFile(409, "export-failed", _("This export failed: it has no file to download."))


def file_etag(export: Export) -> str | None:
    """Changes whenever the file does (a retry writes a new one): lets a client resume."""
    if export.finished_at is None:
        return None
    return f"{export.task_id}-{export.finished_at:%Y%m%d%H%M%S%f}"


def download_file(export: Export, user_id: int) -> Response:
    """The response carrying the export's file (streamed with ranges, or a redirect to the
    object store's presigned URL), holding one of the user's download places. Raises NoFile
    when there is none to send now: see no_file, and too many downloads at once (429), the
    storage down (503), the file gone since (410)."""
    if (refused := no_file(export)) is not None:
        raise refused
    fmt = FORMATS[export.format]
    try:
        response = download_response(get_storage(), export.storage_key, export.filename,
                                     fmt.content_type, etag=file_etag(export))
        return counted_download(response, user_id)
    except TooManyDownloads as many:
        raise NoFile(429, "too-many-downloads", _(
            "You have %(count)d downloads running already, the most at once; try again when "
            "one has finished.", count=many.cap), RETRY_AFTER) from None
    except StorageUnavailable:
        raise NoFile(503, "storage-unavailable", _(
            "The export storage cannot be reached right now. Please try again in a few "
            "minutes.")) from None
    except (FileNotFoundError, NotFound):  # removed since the export finished
        raise NoFile(410, "export-file-gone", _(
            "The file of this export is no longer available. You can start a new export "
            "below.")) from None
