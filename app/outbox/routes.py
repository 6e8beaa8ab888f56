import email
import email.policy
import re
from email.message import EmailMessage

from flask import abort, make_response, render_template
from flask_babel import _

from app.email import outbox_dir, outbox_pages_enabled
from app.outbox import bp

NAME = re.compile(r"^[0-9T]+-[0-9a-f]{8}\.eml$")


@bp.before_request
def only_in_outbox_mode():
    if not outbox_pages_enabled():
        abort(404)


def _load(name: str) -> EmailMessage:
    if not NAME.fullmatch(name):
        abort(404)
    path = outbox_dir() / name
    if not path.is_file():
        abort(404)
    with path.open("rb") as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def _summary(name: str, msg: EmailMessage) -> dict:
    return {"name": name, "subject": msg["subject"], "to": msg["to"], "from": msg["from"],
            "date": msg["date"],
            "attachments": [part.get_filename() for part in msg.iter_attachments()]}


@bp.route("/")
def index():
    names = sorted((p.name for p in outbox_dir().glob("*.eml") if NAME.fullmatch(p.name)),
                   reverse=True)[:200]
    return render_template("outbox/index.html", title=_("Outbox"),
                           messages=[_summary(n, _load(n)) for n in names])


@bp.route("/<name>")
def message(name):
    msg = _load(name)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return render_template("outbox/message.html", title=msg["subject"], msg=_summary(name, msg),
                           text=text.get_content() if text else "",
                           has_html=html is not None)


@bp.route("/<name>/html")
def message_html(name):
    """The HTML body on its own, shown in a sandboxed iframe (no scripts, no same origin)."""
    html = _load(name).get_body(preferencelist=("html",))
    if html is None:
        abort(404)
    response = make_response(html.get_content())
    response.headers["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'")
    response.mimetype = "text/html"
    return response


@bp.route("/<name>/attachments/<int:index>")
def attachment(name, index):
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
