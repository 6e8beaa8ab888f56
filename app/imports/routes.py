"""The import's pages: /imports (the upload form and the history), an import's own page (its
preview, progress and summary), confirm, cancel and the CSV report.

What happens when a user uploads an archive: `start_import` (app/imports/actions.py, which
the token API calls too) has app/imports/centre.py stream the file into storage, and
launches the preview task through app/jobs/lifecycle.py (the Task row and the Import
committed together, then the job enqueued); a worker runs `preview_import` in app/tasks.py,
which reads the archive and records what it found. The page shows that preview; Import
(`confirm_import`) launches the import task the same way, and its progress comes back
through lifecycle.Progress to the page.

Another user's import is a 404 on every route, exactly like an id that never existed. Each
action answers with a flash and a redirect, or with JSON when asked for it (Accept:
application/json), as the export centre does. The blueprint is made here, not in the
package's __init__: a worker imports the package and must not import the views with it (see
app/exports/__init__.py).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from werkzeug.wrappers import Response as WerkzeugResponse

from app.exports.storage import attachment_disposition
from app.imports import centre, report
from app.imports.actions import cancel_import, confirm_import, shown_status, start_import
from app.imports.forms import ImportActionForm, UploadForm
from app.jobs import failures
from app.models import Import, TaskStatus
from app.security.body_limits import max_body_size
from app.security.limits import by_user, configured, limiter
from app.template_filters import file_size

bp = Blueprint("imports", __name__)

# What each kind of archive is called on the page (app/imports/readers: KINDS).
KIND_LABELS = {
    "microblog-json": _l("Microblog posts (JSON)"),
    "microblog-csv": _l("Microblog posts (CSV)"),
    "microblog-activitystreams": _l("Microblog archive (ActivityStreams)"),
    "mastodon": _l("Mastodon archive"),
    "x": _l("X (Twitter) archive"),
}
# Why items were skipped (app/imports/readers: SKIP_REASONS, and the importer's "duplicate").
SKIP_LABELS = {
    "boost": _l("Boosts and retweets"),
    "reply": _l("Replies to other people's posts"),
    "direct": _l("Direct messages"),
    "private": _l("Followers-only posts"),
    "empty": _l("Empty posts"),
    "duplicate": _l("Already on your account"),
}

# --------------------------------------------------------------------------- answers

def _own_import_or_404(import_id: str) -> Import:
    imp = centre.own_import(current_user, import_id)
    if imp is None:
        abort(404)
    return imp


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _answer(message: str, category: str, imp: Import | None = None,
            status: int = 200) -> tuple[Response, int] | WerkzeugResponse:
    """The end of every action: a flash and back to the import's page (or /imports), or the
    same as JSON (with `status`: 409 when the action was refused)."""
    if _wants_json():
        return jsonify({"message": message, "import": import_dict(imp) if imp else None}), status
    flash(message, category)
    if imp is not None and imp.task_id is not None:
        return redirect(url_for("imports.show", import_id=imp.id))
    return redirect(url_for("imports.index"))


def import_dict(imp: Import) -> dict:
    task = imp.task
    status = shown_status(imp)
    summary = report.summary_of(imp) if imp.stage == Import.IMPORT else None
    return {
        "id": imp.id,
        "filename": imp.filename,
        "kind": imp.kind,
        "size": imp.size,
        "stage": imp.stage,
        "status": status,
        "progress": task.to_dict()["progress"] if task else 0,
        "error": (centre.refusal(imp) or failures.reason_for_reader(task.error)
                  if task and status in (TaskStatus.FAILED, TaskStatus.CANCELLED) else None),
        "preview": imp.preview(),
        "summary": asdict(summary) if summary else None,
        "created_at": _iso(imp.created_at),
        "confirm_by": _iso(imp.confirm_by),
        "finished_at": _iso(imp.finished_at),
        "url": url_for("imports.show", import_id=imp.id),
        "report_url": url_for("imports.report_csv", import_id=imp.id) if summary else None,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _when(value: object) -> datetime | None:
    """A time in a preview (ISO 8601, "Z" or not) as the naive UTC the templates show."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.removesuffix("Z"))
    except ValueError:
        return None
    return when.replace(tzinfo=None)


def _max_size() -> str:
    return file_size(current_app.config["IMPORT_MAX_BYTES"])


def _page_context() -> dict:
    """What the templates of these pages need besides the import(s) themselves."""
    return {"kind_labels": KIND_LABELS, "skip_labels": SKIP_LABELS, "when": _when,
            "summary_of": report.summary_of, "preview_warnings": centre.preview_warnings,
            "shown_status": shown_status, "refusal": centre.refusal,
            "max_size": _max_size()}


# --------------------------------------------------------------------------- pages

@bp.route("/imports", methods=["GET", "POST"])
@login_required
@limiter.limit(configured("RATELIMIT_IMPORT"), methods=["POST"], key_func=by_user)
@max_body_size("IMPORT_MAX_BYTES", too_large=centre.too_large)
def index() -> ResponseReturnValue:
    form = UploadForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            errors = [str(e) for errs in form.errors.values() for e in errs]
            return _answer(errors[0] if errors else _("Choose a file to import."), "danger",
                           status=400)
        try:
            imp = start_import(current_user, form.file.data)
        except centre.ImportRefused as exc:
            return _answer(str(exc), "warning", status=409)
        return _answer(_("Your archive was uploaded and is being read. Nothing is imported "
                         "until you have seen the preview and pressed Import."), "success", imp)
    imports = centre.imports_of(current_user)
    if _wants_json():
        return jsonify([import_dict(i) for i in imports])
    reading = current_user.get_task_in_progress(centre.TASK_PREVIEW) is not None
    # ?sections=1: only the parts the page's script refreshes (no layout, so no flashed
    # message is consumed by a fetch the user does not see).
    template = "imports/_index_sections.html" if request.args.get("sections") else \
        "imports/index.html"
    return render_template(template, title=_("Imports"), form=form, imports=imports,
                           reading=reading, **_page_context())


@bp.route("/imports/<import_id>")
@login_required
def show(import_id: str) -> ResponseReturnValue:
    """The import's page: the preview with Import and Cancel, the progress, the summary."""
    imp = _own_import_or_404(import_id)
    if _wants_json():
        return jsonify(import_dict(imp))
    template = "imports/_sections.html" if request.args.get("sections") else \
        "imports/import.html"
    return render_template(template, title=_("Import"), imp=imp, **_page_context())


def _action_form_or_400() -> None:
    # CSRFProtect has already refused a request without a valid token; this is the form's
    # own check, for when CSRF is switched off in a test configuration.
    if not ImportActionForm().validate_on_submit():
        abort(400)


@bp.route("/imports/<import_id>/confirm", methods=["POST"])
@login_required
def confirm(import_id: str) -> ResponseReturnValue:
    imp = _own_import_or_404(import_id)
    _action_form_or_400()
    try:
        confirm_import(imp)
    except centre.ImportRefused as exc:
        return _answer(str(exc), "warning", imp, status=409)
    return _answer(_("Your import has started. You can follow it here, or leave this page: "
                     "you will get a mail when it is done."), "success", imp)


@bp.route("/imports/<import_id>/cancel", methods=["POST"])
@login_required
def cancel(import_id: str) -> ResponseReturnValue:
    imp = _own_import_or_404(import_id)
    _action_form_or_400()
    stage = imp.stage
    try:
        cancel_import(imp)
    except centre.ImportRefused as exc:
        return _answer(str(exc), "warning", imp, status=409)
    if stage == Import.IMPORT:
        message = _("The import was cancelled. The posts imported before it stopped stay on "
                    "your account.")
    else:
        message = _("The import was cancelled. Nothing was imported.")
    return _answer(message, "success", imp)


@bp.route("/imports/<import_id>/report")
@login_required
def report_csv(import_id: str) -> ResponseReturnValue:
    """The import's summary and its problems, item by item, as CSV (streamed)."""
    imp = _own_import_or_404(import_id)
    if imp.stage != Import.IMPORT:
        return _answer(centre.no_report(), "warning", imp, status=409)
    response = Response(stream_with_context(report.report_csv(imp)),
                        content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = attachment_disposition(
        report.report_filename(imp))
    response.headers["Cache-Control"] = "no-store"
    return response
