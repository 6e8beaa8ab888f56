"""/api/imports: what the import's page does, for a program. Every action calls the page's own
(app/imports/actions.py), so the rules are the same (one archive read at a time, one import at
a time, a preview confirmed before IMPORT_CONFIRM_MINUTES, owner-only) and so are the reasons,
as problem types (docs/api.md#problem-types).

Uploading an archive (multipart, field `file`) answers 202 Accepted with its Location: poll
`GET /api/imports/<id>` (If-None-Match: 304 while nothing changed) until its status is
`ready`, read the preview, then `POST .../confirm` (202 again) and poll until `finished`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import marshmallow as ma
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Response, abort, current_app, stream_with_context, url_for
from flask_babel import get_locale
from flask_smorest.fields import Upload

from app import db
from app.api import bp, problems
from app.api.auth import by_api_user, current_api_user, current_user_id
from app.api.conventions import (
    PageArgs,
    Resource,
    Timestamp,
    accepted_doc,
    etag,
    etag_doc,
    keyset_page,
    link_doc,
    links_to,
)
from app.api.idempotency import idempotency_doc, idempotent
from app.api.problems import ApiProblem
from app.api.tasks import ProgressSchema, progress_of, reconciled, task_etag_parts
from app.exports.storage import attachment_disposition
from app.imports import actions, centre, report
from app.jobs import failures
from app.models import Import, TaskStatus
from app.security.body_limits import max_body_size
from app.security.limits import configured, limiter

blp = Resource("imports", __name__, url_prefix="/imports",
                description="Archives brought in (ours, Mastodon's, X's): upload, preview, "
                            "confirm, follow.")

# When to look again at an import whose archive is being read or imported (Retry-After).
POLL_AFTER = 2
# The HTTP status of each reason an action is refused for (centre.ImportRefused.kind);
# any other is a 409 (the import is not in a state that allows it).
REFUSAL_STATUS = {"file-too-large": 413, "empty-file": 422, "import-expired": 410,
                  "storage-unavailable": 503, "jobs-unavailable": 503}
STATUSES = [Import.PREVIEWING, Import.READY, Import.EXPIRED, Import.IMPORTING, Import.FINISHED,
            TaskStatus.FAILED, TaskStatus.CANCELLED]


class UploadSchema(ma.Schema):
    file = Upload(required=True, metadata={
        "description": "the archive: our posts.json, posts.csv or ActivityStreams zip, a "
                       "Mastodon or an X archive (what it is, is read from its content)"})


class SampleSchema(ma.Schema):
    body = ma.fields.String(required=True)
    timestamp = ma.fields.String(allow_none=True)


class PreviewSchema(ma.Schema):
    """What importing the archive would do, read from the whole archive; nothing written."""

    kind = ma.fields.String(allow_none=True, metadata={
        "description": "microblog-json, microblog-csv, microblog-activitystreams, mastodon, x"})
    account = ma.fields.String(allow_none=True, metadata={"description": "whose archive"})
    posts = ma.fields.Integer(required=True, metadata={"description": "posts found"})
    first = ma.fields.String(allow_none=True, metadata={"description": "oldest post's time"})
    last = ma.fields.String(allow_none=True, metadata={"description": "newest post's time"})
    already = ma.fields.Integer(metadata={"description": "already on your account: skipped"})
    skipped = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(), metadata={
        "description": "items that will not be imported, by reason (boost, reply, ...)"})
    broken = ma.fields.Integer(metadata={"description": "unreadable items"})
    follows = ma.fields.Integer(metadata={"description": "accounts followed in the archive"})
    samples = ma.fields.List(ma.fields.Nested(SampleSchema))
    warnings = ma.fields.List(ma.fields.String(), metadata={
        "description": "in the reader's language"})


class SummarySchema(ma.Schema):
    """What the import did, as counted so far."""

    imported = ma.fields.Integer(required=True)
    failed = ma.fields.Integer(required=True)
    followed = ma.fields.Integer(required=True)
    not_found = ma.fields.Integer(required=True)
    skipped = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(),
                             required=True)


class ImportLinksSchema(ma.Schema):
    self = ma.fields.String(required=True)
    task = ma.fields.String(allow_none=True)
    confirm = ma.fields.String(allow_none=True, metadata={
        "description": "present while the preview waits to be confirmed"})
    cancel = ma.fields.String(allow_none=True)
    report = ma.fields.String(allow_none=True, metadata={
        "description": "present once the import has started: its summary and problems (CSV)"})


class ImportSchema(ma.Schema):
    id = ma.fields.String(required=True)
    filename = ma.fields.String(allow_none=True)
    kind = ma.fields.String(allow_none=True)
    size = ma.fields.Integer(allow_none=True, metadata={"description": "bytes"})
    stage = ma.fields.String(required=True, metadata={"enum": [Import.PREVIEW, Import.IMPORT]})
    status = ma.fields.String(required=True, metadata={"enum": STATUSES})
    progress = ma.fields.Nested(ProgressSchema, required=True)
    error = ma.fields.String(allow_none=True, metadata={
        "description": "why it was refused, failed or was cancelled, in the reader's language"})
    preview = ma.fields.Nested(PreviewSchema, allow_none=True)
    summary = ma.fields.Nested(SummarySchema, allow_none=True)
    created_at = Timestamp()
    confirm_by = Timestamp(allow_none=True, metadata={
        "description": "confirm before this, or the upload expires"})
    confirmed_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)
    links = ma.fields.Nested(ImportLinksSchema, required=True)


def _preview(imp: Import) -> dict | None:
    preview = imp.preview()
    if not preview or "refused" in preview:  # a refused archive: `error` says why
        return None
    return {**preview, "warnings": centre.preview_warnings(imp)}


def import_body(imp: Import) -> dict:
    task = imp.task
    status = actions.shown_status(imp)
    started = imp.stage == Import.IMPORT
    summary = report.summary_of(imp) if started else None
    error = None
    if status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        error = centre.refusal(imp) or (failures.reason_for_reader(task.error) if task else None)
    return {
        "id": imp.id, "filename": imp.filename, "kind": imp.kind, "size": imp.size,
        "stage": imp.stage, "status": status, "progress": progress_of(task), "error": error,
        "preview": _preview(imp),
        "summary": summary and {"imported": summary.imported, "failed": summary.failed,
                                "followed": summary.followed, "not_found": summary.not_found,
                                "skipped": summary.skipped},
        "created_at": imp.created_at, "confirm_by": imp.confirm_by,
        "confirmed_at": imp.confirmed_at, "finished_at": imp.finished_at,
        "links": {
            "self": url_for("api.imports.get_import", import_id=imp.id),
            "task": url_for("api.tasks.get_task", task_id=task.id) if task else None,
            "confirm": (url_for("api.imports.confirm", import_id=imp.id)
                        if status == Import.READY else None),
            "cancel": (url_for("api.imports.cancel", import_id=imp.id)
                       if status in (Import.PREVIEWING, Import.READY, Import.IMPORTING)
                       else None),
            "report": url_for("api.imports.report_csv", import_id=imp.id) if started else None,
        },
    }


def _own_import(import_id: str) -> Import:
    """The user's import, or a 404 (another user's is one too). With its task, one query."""
    imp = db.session.scalar(
        sa.select(Import).where(Import.id == import_id, Import.user_id == current_user_id())
        .options(so.joinedload(Import.task))) if len(import_id) <= 32 else None
    if imp is None:
        abort(404)
    return imp


def refusals_as_problems() -> AbstractContextManager[None]:
    """An action refused (centre.ImportRefused) is a problem of its kind."""
    return problems.refusals_as_problems(centre.ImportRefused, REFUSAL_STATUS)


def _accepted(imp: Import) -> tuple[dict, int, dict]:
    location = url_for("api.imports.get_import", import_id=imp.id)
    return import_body(imp), 202, {"Location": location, "Retry-After": str(POLL_AFTER)}


# Where a program goes from an answer that names an import (OpenAPI links: Schemathesis
# follows them, create -> get -> confirm or cancel).
IMPORT_LINKS = links_to({"GetImport": "imports.get_import", "ConfirmImport": "imports.confirm",
                         "CancelImport": "imports.cancel", "ImportReport": "imports.report_csv"},
                        import_id="$response.body#/id")


@blp.route("", methods=["POST"])
@idempotent
@limiter.limit(configured("RATELIMIT_IMPORT"), key_func=by_api_user, override_defaults=False)
@max_body_size("IMPORT_MAX_BYTES", too_large=centre.too_large)
@blp.arguments(UploadSchema, location="files")
@blp.response(202, ImportSchema, headers=accepted_doc("the import: poll it"))
@blp.doc(**idempotency_doc(), responses={202: {"links": IMPORT_LINKS}})
def upload(args: dict) -> tuple[dict, int, dict]:
    """Upload an archive to import

    Its preview is read in the background: poll the import until its status is `ready`,
    then confirm it. Nothing is imported before. Refused while another archive is being
    read (409), for an empty file (422) and a file larger than IMPORT_MAX_BYTES (413)."""
    with refusals_as_problems():
        imp = actions.start_import(current_api_user(), args["file"])
    return _accepted(imp)


@blp.route("")
@blp.arguments(PageArgs, location="query")
@blp.response(200, ImportSchema(many=True), headers=link_doc()["headers"])
def history(args: dict) -> list[dict]:
    """Your imports, newest first"""
    query = sa.select(Import).where(Import.user_id == current_user_id()).options(
        so.joinedload(Import.task))
    imports = keyset_page(query, Import.created_at, Import.id, args,
                          lambda i: (i.created_at, i.id))
    return [import_body(imp) for imp in imports]


@blp.route("/<id:import_id>")
@blp.response(200, ImportSchema)
@blp.doc(**etag_doc())
def get_import(import_id: str) -> dict:
    """One of your imports: its state, progress, preview and summary, and links

    Poll it with If-None-Match: 304 while nothing changed."""
    imp = _own_import(import_id)
    if imp.task is not None:
        reconciled(imp.task)
    # The answer's words (error, warnings) are in the reader's language: so is its ETag. A
    # preview waiting for its confirmation shows as expired from confirm_by on, unwritten.
    status = actions.shown_status(imp)
    etag(imp.id, status, imp.stage, imp.position, imp.imported,
         imp.failed, imp.confirm_by, imp.finished_at, imp.expired_at, str(get_locale()),
         *task_etag_parts(imp.task),
         valid_until=imp.confirm_by if status == Import.READY else None)
    return import_body(imp)


@blp.route("/<id:import_id>/confirm", methods=["POST"])
@idempotent
@limiter.limit(configured("RATELIMIT_IMPORT"), key_func=by_api_user, override_defaults=False)
@blp.response(202, ImportSchema, headers=accepted_doc("the import: poll it"))
@blp.doc(**idempotency_doc(), responses={202: {"links": IMPORT_LINKS}})
def confirm(import_id: str) -> tuple[dict, int, dict]:
    """Import the previewed archive

    Refused unless its preview is ready (409) and unexpired (410), and while another import
    of yours runs (409)."""
    imp = _own_import(import_id)
    with refusals_as_problems():
        actions.confirm_import(imp)
    return _accepted(imp)


@blp.route("/<id:import_id>/cancel", methods=["POST"])
@blp.response(200, ImportSchema)
def cancel(import_id: str) -> dict:
    """Cancel reading or importing the archive, or drop a preview

    The posts imported before it stopped stay on your account. An import that has ended:
    409."""
    imp = _own_import(import_id)
    with refusals_as_problems():
        actions.cancel_import(imp)
    return import_body(imp)


@blp.route("/<id:import_id>/report")
@blp.doc(responses={
    "200": {"description": "the summary, then each problem, item by item (UTF-8, CRLF)",
            "content": {"text/csv": {"schema": {"type": "string"}}}},
    "409": {"$ref": "#/components/responses/CONFLICT"},
    "404": {"$ref": "#/components/responses/NOT_FOUND"}})
def report_csv(import_id: str) -> Response:
    """The import's report (CSV)"""
    imp = _own_import(import_id)
    if imp.stage != Import.IMPORT:
        raise ApiProblem(409, "import-no-report", centre.no_report())
    response = current_app.response_class(
        stream_with_context(report.report_csv(imp)), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = attachment_disposition(
        report.report_filename(imp))
    response.headers["Cache-Control"] = "no-store"
    return response


bp.register_blueprint(blp)
