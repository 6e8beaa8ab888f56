"""/api/exports: what the export centre's page does, for a program. Every action calls the
page's own (app/exports/actions.py), so the rules are the same (format, cooldown, one at a
time, EXPORT_KEEP, owner-only) and so are the reasons, as problem types
(docs/api.md#problem-types).

Starting an export answers 202 Accepted with its Location and a Retry-After (when to look
again); `GET /api/exports/<id>` with If-None-Match is the poll (an ETag of a few columns);
the download is the page's (ranges, or a redirect to a presigned URL).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import marshmallow as ma
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Response, abort, url_for

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
from app.exports import actions, centre
from app.exports.formats import FORMATS
from app.jobs import failures
from app.models import Export, TaskStatus
from app.security.limits import configured, limiter

blp = Resource("exports", __name__, url_prefix="/exports",
                description="Archives of your posts: start, follow, download.")

# When to look again at an export that has just started (seconds, in Retry-After).
POLL_AFTER = 2
# The HTTP status of each reason an action is refused for (centre.ExportRefused.kind).
REFUSAL_STATUS = {"unknown-format": 422, "export-cooldown": 429, "storage-unavailable": 503,
                  "jobs-unavailable": 503}
FILE_TYPES = sorted({fmt.content_type.split(";")[0] for fmt in FORMATS.values()})


class NewExportSchema(ma.Schema):
    format = ma.fields.String(load_default="json", metadata={
        "enum": sorted(FORMATS), "description": "json (the default), csv or activitystreams"})


class ExportLinksSchema(ma.Schema):
    self = ma.fields.String(required=True)
    task = ma.fields.String(allow_none=True)
    download = ma.fields.String(allow_none=True, metadata={
        "description": "present once the file can be downloaded"})
    cancel = ma.fields.String(allow_none=True)
    retry = ma.fields.String(allow_none=True)


class ExportSchema(ma.Schema):
    id = ma.fields.String(required=True)
    format = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": [
        "queued", "running", "finished", "failed", "cancelled", "expired", "replaced"]})
    progress = ma.fields.Nested(ProgressSchema, required=True)
    error = ma.fields.String(allow_none=True, metadata={
        "description": "why it failed or was cancelled, in the reader's language"})
    filename = ma.fields.String(allow_none=True)
    posts_count = ma.fields.Integer(allow_none=True)
    size = ma.fields.Integer(allow_none=True, metadata={"description": "bytes"})
    created_at = Timestamp()
    finished_at = Timestamp(allow_none=True)
    expires_at = Timestamp(allow_none=True)
    links = ma.fields.Nested(ExportLinksSchema, required=True)


def export_body(export: Export) -> dict:
    task = export.task
    status = export.status
    active = status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    return {
        "id": export.id, "format": export.format, "status": status,
        "progress": progress_of(task),
        "error": (failures.reason_for_reader(task.error)
                  if task is not None and status != TaskStatus.FINISHED else None),
        "filename": export.filename, "posts_count": export.posts_count, "size": export.size,
        "created_at": export.created_at, "finished_at": export.finished_at,
        "expires_at": export.expires_at,
        "links": {
            "self": url_for("api.exports.get_export", export_id=export.id),
            "task": url_for("api.tasks.get_task", task_id=task.id) if task else None,
            "download": (url_for("api.exports.download", export_id=export.id)
                         if actions.downloadable(export) else None),
            "cancel": url_for("api.exports.cancel", export_id=export.id) if active else None,
            "retry": (url_for("api.exports.retry", export_id=export.id)
                      if status in (TaskStatus.FAILED, TaskStatus.CANCELLED) else None),
        },
    }


# Built once: every poll runs it (building a statement costs more than SQLite running it).
_OWN_EXPORT = sa.select(Export).where(
    Export.id == sa.bindparam("export_id"), Export.user_id == sa.bindparam("user_id")
).options(so.joinedload(Export.task))


def _own_export(export_id: str) -> Export:
    """The user's export, or a 404 (another user's is one too). With its task, one query."""
    export = db.session.scalar(_OWN_EXPORT, {"export_id": export_id,
                                             "user_id": current_user_id()})
    if export is None:
        abort(404)
    return export


def refusals_as_problems() -> AbstractContextManager[None]:
    """An action refused (centre.ExportRefused) is a problem of its kind."""
    return problems.refusals_as_problems(centre.ExportRefused, REFUSAL_STATUS)


def _accepted(export: Export) -> tuple[dict, int, dict]:
    location = url_for("api.exports.get_export", export_id=export.id)
    return export_body(export), 202, {"Location": location, "Retry-After": str(POLL_AFTER)}


# Where a program goes from an answer that names an export (OpenAPI links: Schemathesis
# follows them, start -> get -> cancel, download, retry, delete).
EXPORT_LINKS = links_to({"GetExport": "exports.get_export", "CancelExport": "exports.cancel",
                         "DownloadExport": "exports.download", "RetryExport": "exports.retry",
                         "DeleteExport": "exports.delete"}, export_id="$response.body#/id")


@blp.route("", methods=["POST"])
@idempotent
@limiter.limit(configured("RATELIMIT_EXPORT"), key_func=by_api_user, override_defaults=False)
@blp.arguments(NewExportSchema, required=False)
@blp.response(202, ExportSchema, headers=accepted_doc("the export: poll it"))
@blp.doc(**idempotency_doc(), responses={202: {"links": EXPORT_LINKS}})
def start(args: dict) -> tuple[dict, int, dict]:
    """Start an export of your posts

    Refused during the cooldown (429, Retry-After), while another export runs (409), and
    for an unknown format (422)."""
    with refusals_as_problems():
        export = actions.start_export(current_api_user(), args["format"])
    return _accepted(export)


@blp.route("")
@blp.arguments(PageArgs, location="query")
@blp.response(200, ExportSchema(many=True), headers=link_doc()["headers"])
def history(args: dict) -> list[dict]:
    """Your exports, newest first"""
    query = sa.select(Export).where(Export.user_id == current_user_id()).options(
        so.joinedload(Export.task))
    exports = keyset_page(query, Export.created_at, Export.id, args,
                          lambda e: (e.created_at, e.id))
    return [export_body(export) for export in exports]


@blp.route("/<id:export_id>")
@blp.response(200, ExportSchema)
@blp.doc(**etag_doc())
def get_export(export_id: str) -> dict:
    """One of your exports: its state, progress (done, total, ETA), file and links

    Poll it with If-None-Match: 304 while nothing changed."""
    export = _own_export(export_id)
    if export.task is not None:
        reconciled(export.task)
    etag(export.id, export.status, export.expires_at, export.size,
         *task_etag_parts(export.task))
    return export_body(export)


@blp.route("/<id:export_id>/download")
@blp.doc(responses={
    "200": {"description": "the file", "content": {t: {"schema": {}} for t in FILE_TYPES}},
    "206": {"description": "the range asked for (Range)",
            "content": {t: {"schema": {}} for t in FILE_TYPES}},
    "302": {"description": "the file's presigned URL in the object store (Location)"},
    "409": "CONFLICT",
    "410": "GONE",
    "416": {"description": "the range starts past the end of the file"},
    "429": "TOO_MANY_REQUESTS",
    "503": "SERVICE_UNAVAILABLE",
    "404": "NOT_FOUND"})
def download(export_id: str) -> Response:
    """The export's file

    Streamed, with byte ranges (Range, If-Range), or a redirect to the object store."""
    export = _own_export(export_id)
    try:
        return actions.download_file(export, current_user_id())
    except actions.NoFile as refused:
        raise ApiProblem(refused.status, refused.kind, refused.message,
                         headers=refused.headers) from None


@blp.route("/<id:export_id>/cancel", methods=["POST"])
@blp.response(200, ExportSchema)
def cancel(export_id: str) -> dict:
    """Cancel a queued or running export

    A running one stops within a batch of posts, removes its partial file and sends no mail.
    An export that has ended: 409."""
    export = _own_export(export_id)
    with refusals_as_problems():
        actions.cancel_export(export)
    return export_body(export)


@blp.route("/<id:export_id>/retry", methods=["POST"])
@idempotent
@limiter.limit(configured("RATELIMIT_EXPORT"), key_func=by_api_user, override_defaults=False)
@blp.response(202, ExportSchema, headers=accepted_doc("the export: poll it"))
@blp.doc(**idempotency_doc(), responses={202: {"links": EXPORT_LINKS}})
def retry(export_id: str) -> tuple[dict, int, dict]:
    """Run a failed or cancelled export again"""
    export = _own_export(export_id)
    with refusals_as_problems():
        actions.retry_export(export)
    return _accepted(export)


@blp.route("/<id:export_id>", methods=["DELETE"])
@blp.response(204)
def delete(export_id: str) -> None:
    """Delete an export and its file (a queued or running one is cancelled first)"""
    export = _own_export(export_id)
    with refusals_as_problems():
        actions.delete_export(export)


bp.register_blueprint(blp)
