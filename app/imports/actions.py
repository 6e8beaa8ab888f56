"""What a user does to their imports, for every way they reach it: the import's pages
(app/imports/routes.py) and the token API (app/api/imports.py) call these same functions, so
both follow one set of rules (one archive read at a time, one import at a time, a preview
confirmed before it expires, owner-only) and give the same reasons.

Each action asks the centre (app/imports/centre.py) whether it may, then launches or cancels
the import's task through app/jobs/lifecycle.py. A refusal raises centre.ImportRefused with
the reason a user reads (translated), having changed nothing.
"""

from __future__ import annotations

import logging

from flask_babel import _
from werkzeug.datastructures import FileStorage

from app.exports.storage import StorageUnavailable
from app.imports import centre
from app.jobs import lifecycle, types
from app.models import Import, User, utcnow

log = logging.getLogger(__name__)

# Recorded in English, shown translated (app/jobs/failures.py).
CANCELLED_BY_YOU = "Cancelled by you."


def start_import(user: User, upload: FileStorage) -> Import:
    """Store the uploaded archive and start reading it (the preview). Refused while another
    archive of the user's is being read, for an empty file, when the storage or the job
    queue is down."""
    if user.get_task_in_progress(centre.TASK_PREVIEW) is not None:
        raise centre.ImportRefused(_preview_running(), "import-preview-in-progress")
    imp = centre.store_upload(user, display_name(upload.filename), upload.stream)
    try:
        _launch(user, imp, centre.TASK_PREVIEW, _("Reading your archive..."))
    except centre.ImportRefused:
        if imp.task_id is None:  # never committed: its file would be nobody's
            _remove_orphan(imp)
        raise
    log.info("Import %s uploaded by user %s (%s bytes)", imp.id, user.id, imp.size)
    return imp


def _remove_orphan(imp: Import) -> None:
    try:
        centre.remove_file(imp)
    except StorageUnavailable as exc:  # the refusal stands; the file is left behind
        log.warning("Upload of user %s refused; its file %s stays: %s", imp.user_id,
                    imp.storage_key, exc)


def confirm_import(imp: Import) -> None:
    """Import the previewed archive: refused unless its preview is ready and unexpired, and
    while another import of the user's runs."""
    centre.prepare_confirm(imp)
    _launch(imp.user, imp, centre.TASK_IMPORT, _("Importing posts..."))
    log.info("Import %s confirmed by user %s", imp.id, imp.user_id)


def cancel_import(imp: Import) -> None:
    """Stop reading or importing the archive (posts already imported stay), or drop an
    upload that was previewed and not confirmed. Either way its file goes."""
    status = shown_status(imp)
    if status in (Import.READY, Import.EXPIRED) and imp.expired_at is None:
        centre.discard(imp)
        return
    if status == Import.FINISHED:  # every post is in; its task may still be sending the mail
        raise centre.ImportRefused(_already_ended(), "import-ended")
    task = centre.cancellable_task(imp)
    try:
        lifecycle.cancel(task, CANCELLED_BY_YOU)
    except lifecycle.TaskNotActive:
        raise centre.ImportRefused(_already_ended(), "import-ended") from None
    centre.after_cancel(imp)


def _already_ended() -> str:
    return _("This import has already ended; there is nothing to cancel.")


def _launch(user: User, imp: Import, name: str, description: str) -> None:
    try:
        lifecycle.launch(user, name, description, imp.id, attach=centre.attach(imp),
                         job_timeout=types.import_timeout(imp.size))
    except lifecycle.TaskAlreadyRunning:
        if name == centre.TASK_PREVIEW:
            raise centre.ImportRefused(_preview_running(), "import-preview-in-progress") from None
        raise centre.ImportRefused(_("Another import is in progress. You can start this one "
                                     "when it has finished."), "import-in-progress") from None
    except lifecycle.JobsUnavailable:
        raise centre.ImportRefused(_(lifecycle.JOBS_UNAVAILABLE), "jobs-unavailable") from None


def _preview_running() -> str:
    return _("Another archive is being read. You can upload the next one when its preview "
             "is ready.")


def display_name(filename: str | None) -> str:
    """The name the browser gave the file, as shown on the page: its last part (a browser may
    send a whole path), without control characters, at most 255 characters. Never a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:255] or "archive"


def shown_status(imp: Import) -> str:
    """The import's status as its pages and the API show it: a preview past its confirm_by is
    expired, before the scheduled job has deleted its file (Import.status: once it has)."""
    status = imp.status
    if status == Import.READY and imp.confirm_by is not None and imp.confirm_by <= utcnow():
        return Import.EXPIRED
    return status
