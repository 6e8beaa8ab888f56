"""The export centre's pages: /exports (the start form and the history), download, cancel,
retry, delete, and the seed's POST /export_posts.

What happens when a user clicks Export: `start_export` below asks app/exports/centre.py
whether it may (format, cooldown) and launches the task through app/jobs/lifecycle.py (the
Task row and the Export committed together, then the job enqueued); a worker runs
`export_posts` in app/tasks.py, which writes the file and mails it through app/exports/.
Progress comes back through lifecycle.Progress to the page.

Another user's export is a 404 on every route, exactly like an id that never existed. Each
action answers with a flash and a redirect back to /exports, or with JSON when asked for it
(Accept: application/json). The blueprint is made here, not in the package's __init__ (see
there)."""

from __future__ import annotations

import logging
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import _
from flask_login import current_user, login_required
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from app.exports import centre
from app.exports.download import RETRY_AFTER, TooManyDownloads, counted_download, download_response
from app.exports.formats import FORMATS
from app.exports.forms import FORMAT_CHOICES, ExportActionForm, StartExportForm
from app.exports.storage import StorageUnavailable, get_storage
from app.forms import EmptyForm
from app.jobs import failures, lifecycle
from app.models import Export, TaskStatus, User, utcnow
from app.security.limits import by_user, configured, limiter

bp = Blueprint("exports", __name__)
log = logging.getLogger(__name__)

ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
FORMAT_LABELS = {choice.name: choice.label for choice in FORMAT_CHOICES}


# --------------------------------------------------------------------------- a user's actions
# Each refuses with centre.ExportRefused, the reason a user reads, having changed nothing.

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
            _("This export has already ended; there is nothing to cancel.")) from None
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
        raise centre.ExportRefused(_("An export task is currently in progress")) from None
    except lifecycle.JobsUnavailable:
        raise centre.ExportRefused(_(lifecycle.JOBS_UNAVAILABLE)) from None


# --------------------------------------------------------------------------- pages

def _own_export_or_404(export_id: str) -> Export:
    export = centre.own_export(current_user, export_id)
    if export is None:
        abort(404)
    return export


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _answer(message: str, category: str, export: Export | None = None,
            status: int = 200) -> tuple[Response, int] | WerkzeugResponse:
    """The end of every action: a flash and back to /exports, or the same as JSON (with
    `status`: 409 when the action was refused)."""
    if _wants_json():
        body = {"message": message, "export": export_dict(export) if export else None}
        return jsonify(body), status
    flash(message, category)
    return redirect(url_for("exports.index"))


def export_dict(export: Export) -> dict:
    task = export.task
    return {
        "id": export.id,
        "format": export.format,
        "status": export.status,
        "progress": task.to_dict()["progress"] if task else 0,
        "error": (failures.reason_for_reader(task.error)
                  if task and export.status != TaskStatus.FINISHED else None),
        "posts_count": export.posts_count,
        "size": export.size,
        "created_at": _iso(export.created_at),
        "expires_at": _iso(export.expires_at),
        "download_url": (url_for("exports.download", export_id=export.id)
                         if _downloadable(export) else None),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _past_expiry(export: Export) -> bool:
    """Expired or replaced, or due to expire (the scheduled expiry has not run yet)."""
    return export.status in (Export.EXPIRED, Export.REPLACED) or (
        export.expires_at is not None and export.expires_at <= utcnow())


def _downloadable(export: Export) -> bool:
    return (export.status == TaskStatus.FINISHED and export.storage_key is not None
            and not _past_expiry(export))


@bp.route("/exports", methods=["GET", "POST"])
@login_required
@limiter.limit(configured("RATELIMIT_EXPORT"), methods=["POST"], key_func=by_user)
def index() -> ResponseReturnValue:
    form = StartExportForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            errors = [str(e) for errs in form.errors.values() for e in errs]
            return _answer(errors[0] if errors else _("Choose an export format."), "danger",
                           status=400)
        try:
            export = start_export(current_user, form.format.data)
        except centre.ExportRefused as exc:
            return _answer(str(exc), "warning", status=409)
        return _answer(_("Your export has started. It appears below; you can download it "
                         "here when it is ready."), "success", export)
    exports = centre.exports_of(current_user)
    if _wants_json():
        return jsonify([export_dict(e) for e in exports])
    in_progress = current_user.get_task_in_progress(centre.TASK_NAME) is not None
    # ?sections=1: only the parts the page's script refreshes (no layout, so no flashed
    # message is consumed by a fetch the user does not see).
    template = "exports/_sections.html" if request.args.get("sections") else "exports/index.html"
    return render_template(
        template, title=_("Exports"), form=form, exports=exports, formats=FORMAT_CHOICES,
        format_labels=FORMAT_LABELS, in_progress=in_progress,
        next_export_at=None if in_progress else centre.next_export_at(current_user),
        downloadable=_downloadable, past_expiry=_past_expiry)


@bp.route("/exports/<export_id>/download")
@login_required
def download(export_id: str) -> ResponseReturnValue:
    """The file of a finished export. Anything else goes back to /exports with what happened
    to it (a link from an old mail to an expired export says that it expired)."""
    export = _own_export_or_404(export_id)
    if export.status == Export.REPLACED:
        return _answer(_("This export was replaced by a newer export and its file was deleted "
                         "(you keep your newest ones). You can download those below."),
                       "warning", export, status=410)
    if _past_expiry(export):
        return _answer(_("This export has expired and its file was deleted. You can start a "
                         "new one below."), "warning", export, status=410)
    if not _downloadable(export):
        return _answer(_no_file_message(export), "warning", export, status=409)
    fmt = FORMATS[export.format]
    # Changes whenever the file does (a retry writes a new one): lets a browser resume.
    etag = f"{export.task_id}-{export.finished_at:%Y%m%d%H%M%S%f}" if export.finished_at else None
    try:
        response = download_response(get_storage(), export.storage_key, export.filename,
                                     fmt.content_type, etag=etag)
        return counted_download(response, current_user.id)
    except TooManyDownloads as refused:
        answer = _answer(_("You have %(count)d downloads running already, the most at once; "
                           "try again when one has finished.", count=refused.cap), "warning",
                         export, status=429)
        return answer if not isinstance(answer, tuple) else (*answer, RETRY_AFTER)
    except StorageUnavailable:
        return _answer(_("The export storage cannot be reached right now. Please try again "
                         "in a few minutes."), "danger", export, status=503)
    except (FileNotFoundError, NotFound):  # removed since the export finished
        return _answer(_("The file of this export is no longer available. You can start a "
                         "new export below."), "warning", export, status=410)


def _no_file_message(export: Export) -> str:
    if export.status in ACTIVE:
        return _("This export is not ready yet. It can be downloaded here once it is "
                 "finished.")
    if export.status == TaskStatus.CANCELLED:
        return _("This export was cancelled: it has no file to download.")
    return _("This export failed: it has no file to download.")


def _action_form_or_400() -> None:
    # CSRFProtect has already refused a request without a valid token; this is the form's
    # own check, for when CSRF is switched off in a test configuration.
    if not ExportActionForm().validate_on_submit():
        abort(400)


@bp.route("/exports/<export_id>/cancel", methods=["POST"])
@login_required
def cancel(export_id: str) -> ResponseReturnValue:
    export = _own_export_or_404(export_id)
    _action_form_or_400()
    try:
        cancel_export(export)
    except centre.ExportRefused as exc:
        return _answer(str(exc), "warning", export, status=409)
    return _answer(_("The export was cancelled."), "success", export)


@bp.route("/exports/<export_id>/retry", methods=["POST"])
@login_required
@limiter.limit(configured("RATELIMIT_EXPORT"), key_func=by_user)
def retry(export_id: str) -> ResponseReturnValue:
    export = _own_export_or_404(export_id)
    _action_form_or_400()
    try:
        retry_export(export)
    except centre.ExportRefused as exc:
        return _answer(str(exc), "warning", export, status=409)
    return _answer(_("The export is being tried again."), "success", export)


@bp.route("/exports/<export_id>/delete", methods=["GET", "POST"])
@login_required
def delete(export_id: str) -> ResponseReturnValue:
    """GET: the confirmation page (no script needed to ask); POST (from it): the deletion."""
    export = _own_export_or_404(export_id)
    if request.method == "GET":
        return render_template("exports/delete.html", title=_("Delete export"), export=export,
                               format_label=FORMAT_LABELS.get(export.format, export.format))
    _action_form_or_400()
    try:
        delete_export(export)
    except centre.ExportRefused as exc:
        return _answer(str(exc), "danger", export, status=503)
    return _answer(_("The export was deleted."), "success")


@bp.route("/export_posts", methods=["POST"])
@login_required
@limiter.limit(configured("RATELIMIT_EXPORT"), key_func=by_user)
def export_posts() -> ResponseReturnValue:
    """The seed's button on the user's own profile page: a JSON export, back to the profile."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        start_export(current_user, "json")
    except centre.ExportRefused as exc:
        flash(str(exc), "warning")
    return redirect(url_for("main.user", username=current_user.username))
