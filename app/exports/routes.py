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
from werkzeug.wrappers import Response as WerkzeugResponse

from app.exports import centre
from app.exports.actions import (
    NoFile,
    cancel_export,
    delete_export,
    download_file,
    downloadable,
    past_expiry,
    retry_export,
    start_export,
)
from app.exports.forms import FORMAT_CHOICES, ExportActionForm, StartExportForm
from app.forms import EmptyForm
from app.jobs import failures
from app.models import Export, TaskStatus
from app.security.limits import by_user, configured, limiter

bp = Blueprint("exports", __name__)
log = logging.getLogger(__name__)

FORMAT_LABELS = {choice.name: choice.label for choice in FORMAT_CHOICES}


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
                         if downloadable(export) else None),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


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
        downloadable=downloadable, past_expiry=past_expiry)


@bp.route("/exports/<export_id>/download")
@login_required
def download(export_id: str) -> ResponseReturnValue:
    """The file of a finished export. Anything else goes back to /exports with what happened
    to it (a link from an old mail to an expired export says that it expired)."""
    export = _own_export_or_404(export_id)
    try:
        return download_file(export, current_user.id)
    except NoFile as refused:
        answer = _answer(refused.message, "danger" if refused.status >= 500 else "warning",
                         export, status=refused.status)
        return (*answer, refused.headers) if isinstance(answer, tuple) else answer


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
