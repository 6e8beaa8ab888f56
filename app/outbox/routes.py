"""The outbox pages: each signed-in user reads the mail addressed to them, nobody else's.

Mail holds password-reset links, so a message that another user may not read answers 404,
exactly as a name that does not exist (nothing tells the two apart)."""

import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import getaddresses

from flask import Response, abort, make_response, render_template
from flask.typing import ResponseReturnValue
from flask_babel import _
from flask_login import current_user

from app import login
from app.email import outbox_dir, outbox_pages_enabled
from app.models import User
from app.outbox import bp

NAME = re.compile(r"[0-9T]+-[0-9a-f]{8}\.eml")  # fullmatch only
# The mail's HTML body in a sandboxed iframe of the message page: no scripts, no same origin,
# no requests of its own; only the message page (same origin) may frame it.
HTML_BODY_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@bp.before_request
def only_in_outbox_mode_and_signed_in() -> ResponseReturnValue | None:
    if not outbox_pages_enabled():
        abort(404)
    if not current_user.is_authenticated:
        return login.unauthorized()
    return None


def addressees(msg: EmailMessage) -> set[str]:
    """The addresses a message was sent to (To and Cc), lower-cased."""
    fields = [str(value) for header in ("to", "cc") for value in msg.get_all(header, [])]
    return {address.lower() for _name, address in getaddresses(fields) if address}


def can_read(msg: EmailMessage, user: User) -> bool:
    """Whether `user` may read this mail in the outbox: its addressees, and admins (who
    answer for the app's mail: a bounced export, a reset link that never arrived)."""
    return user.is_admin or user.email.lower() in addressees(msg)


def _read(name: str) -> EmailMessage | None:
    if not NAME.fullmatch(name):
        return None
    path = outbox_dir() / name
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def _load(name: str) -> EmailMessage:
    """The message called `name` if the current user may read it; 404 otherwise."""
    msg = _read(name)
    if msg is None or not can_read(msg, current_user):
        abort(404)
    return msg


def _summary(name: str, msg: EmailMessage) -> dict:
    return {"name": name, "subject": msg["subject"], "to": msg["to"], "from": msg["from"],
            "date": msg["date"],
            "attachments": [part.get_filename() for part in msg.iter_attachments()]}


@bp.route("/")
def index() -> str:
    names = sorted((p.name for p in outbox_dir().glob("*.eml") if NAME.fullmatch(p.name)),
                   reverse=True)
    readable = []
    for name in names:
        msg = _read(name)
        if msg is not None and can_read(msg, current_user):
            readable.append(_summary(name, msg))
            if len(readable) == 200:
                break
    return render_template("outbox/index.html", title=_("Outbox"), messages=readable)


@bp.route("/<name>")
def message(name: str) -> str:
    msg = _load(name)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return render_template("outbox/message.html", title=msg["subject"], msg=_summary(name, msg),
                           text=text.get_content() if text else "",
                           has_html=html is not None)


@bp.route("/<name>/html")
def message_html(name: str) -> Response:
    """The HTML body on its own, shown in a sandboxed iframe (no scripts, no same origin)."""
    html = _load(name).get_body(preferencelist=("html",))
    if html is None:
        abort(404)
    response = make_response(html.get_content())
    response.headers["Content-Security-Policy"] = HTML_BODY_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.mimetype = "text/html"
    return response


@bp.route("/<name>/attachments/<int:index>")
def attachment(name: str, index: int) -> Response:
    parts = list(_load(name).iter_attachments())
    if not 0 <= index < len(parts):
        abort(404)
    part = parts[index]
    # The attachment's own bytes: decoding a text part with a guessed charset could change them.
    response = make_response(part.get_payload(decode=True))
    response.mimetype = part.get_content_type()
    response.headers.set("Content-Disposition", "attachment",
                         filename=part.get_filename() or "attachment")
    return response
