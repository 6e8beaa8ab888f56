"""Delivering an export: its file written to storage, and the one mail that says where to
download it (with posts.json attached when it is small enough). Knows nothing about RQ:
app/tasks.py runs these with the job's progress report and the job's id as the mail's key.

Links in the mail are absolute, built from PUBLIC_BASE_URL (app/urls.py): a worker has no
request to take the site's address from. The paths are the export centre's public ones (`/exports`,
`/exports/<id>/download`), joined to the base so that a site served under a path prefix
(PUBLIC_BASE_URL=https://example.org/microblog) gets working links too.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app, render_template
from flask_babel import gettext as _

from app.email import send_email_once
from app.exports import centre, formats
from app.exports.storage import get_storage
from app.models import Export
from app.urls import public_url

SUBJECT = "[Microblog] Your blog posts"  # the seed's, in every language (mail filters)


def write_file(export: Export, attempt: str | None,
               on_progress: Callable[[int], None] | None = None) -> int | None:
    """Write the export's file to storage in its format as `attempt` (the task's id) and
    record it on the row (centre.record_file refuses an old attempt). The file appears only
    when complete; whatever on_progress raises (a cancel) discards it. A file this attempt
    already recorded (RQ retrying it after its mail failed) is not rewritten. Returns the
    size written (None: nothing was)."""
    storage = get_storage()
    key = centre.storage_key(export, attempt)
    if export.storage_key == key and export.finished_at and storage.exists(key):
        return None
    with storage.writer(key) as out:
        posts = formats.write_export(export.format, export.user, out, on_progress)
    size = storage.size(key)
    centre.record_file(export, attempt, key, posts, size)
    return size


def links(export: Export) -> dict[str, str]:
    """Absolute URLs of the export centre and of this export's download."""
    return {"exports_url": public_url("/exports"),
            "download_url": public_url(f"/exports/{export.id}/download")}


def attaches(export: Export) -> bool:
    """Whether the mail carries the file itself: JSON (the seed's posts.json) within
    EXPORT_ATTACHMENT_LIMIT."""
    return (export.format == "json"
            and export.size <= current_app.config["EXPORT_ATTACHMENT_LIMIT"])


def mail_context(export: Export, attached: bool) -> dict:
    """What the export mail's templates (email/export_posts.*) are rendered with."""
    return dict(
        user=export.user, export=export, attached=attached, size=export.size,
        limit=current_app.config["EXPORT_ATTACHMENT_LIMIT"],
        expires=export.expires_at.strftime("%Y-%m-%d %H:%M"), **links(export))


def compose_mail(export: Export) -> tuple[dict, bool]:
    """The fields of send_email_once for the one mail about a finished export (its
    templates rendered), and whether the file is attached. The attachment is read from
    storage in chunks only when the mail is sent, never held in memory whole."""
    attached = attaches(export)
    attachments = []
    if attached:
        fmt = formats.FORMATS[export.format]
        key = export.storage_key
        attachments.append((fmt.filename, fmt.content_type, lambda: get_storage().read(key)))
    context = mail_context(export, attached)
    fields = dict(
        subject=SUBJECT, sender=current_app.config["ADMINS"][0],
        recipients=[export.user.email],
        text_body=render_template("email/export_posts.txt", **context),
        html_body=render_template("email/export_posts.html", **context),
        attachments=attachments)
    return fields, attached


def send_mail(export: Export, mail_key: str, composed: tuple[dict, bool] | None = None) -> bool:
    """Send the user the one mail about their finished export (send_email_once: a retried
    job never sends it twice), as compose_mail composes it. Returns whether the file was
    attached."""
    fields, attached = composed or compose_mail(export)
    send_email_once(key=mail_key, **fields)
    return attached


def finished_message(attached: bool) -> str:
    """What the user's task alert says when the export is done: where to go next."""
    if attached:
        return _("Your posts were exported. Check your email, or download them from "
                 "your exports.")
    return _("Your posts were exported. Download them from your exports (the link is in "
             "your email too).")
