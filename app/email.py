"""One way to send mail: send_email(). SMTP when MAIL_SERVER is set; otherwise every message
is written to a local outbox under instance/outbox that the /outbox pages show."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
import rq
from flask import current_app
from flask_mail import Message

from app import mail
from app.models import utcnow

log = logging.getLogger(__name__)

Attachment = tuple[str, str, bytes]
MAIL_CLAIM_SECONDS = 120
MAIL_FAILURE_TTL = 7 * 24 * 3600


def outbox_enabled() -> bool:
    """The local outbox stands in for SMTP when no MAIL_SERVER is set. Its pages show every
    mail (password-reset links included), so they are a development tool: never served in
    production, where mail without a MAIL_SERVER is still written to disk, not shown."""
    return not current_app.config.get("MAIL_SERVER")


def outbox_pages_enabled() -> bool:
    return outbox_enabled() and current_app.config.get("MICROBLOG_ENV") != "production"


def outbox_dir() -> Path:
    path = Path(current_app.instance_path) / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_message(subject: str, sender: str, recipients: list[str], text_body: str,
                  html_body: str, attachments: list[Attachment] | None = None) -> Message:
    msg = Message(subject, sender=sender, recipients=recipients)
    msg.body = text_body
    msg.html = html_body
    for filename, media_type, data in attachments or []:
        msg.attach(filename, media_type, data)
    return msg


def deliver(msg: Message) -> None:
    """Hand one message to the SMTP server, or write it to the outbox. Raises what smtplib
    raises (the caller decides about retries)."""
    if outbox_enabled():
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        tmp = outbox_dir() / (name + ".part")
        tmp.write_bytes(msg.as_bytes())
        tmp.rename(outbox_dir() / name)
    else:
        mail.send(msg)


@dataclass(frozen=True, repr=False)
class QueuedMail:
    """One email as a mail job carries it. Its repr names the subject and the number of
    recipients, never the body: RQ hands a failed job's arguments to its log handlers (as the
    record's `extra`), and dashboards show them, while a body may hold a password-reset link."""

    subject: str
    sender: str
    recipients: list[str]
    text_body: str
    html_body: str
    attachments: list[Attachment] | None = None

    def summary(self) -> str:
        return f"{self.subject[:80]!r} to {len(self.recipients)} recipient(s)"

    def __repr__(self) -> str:
        return f"<QueuedMail {self.summary()}>"

    def message(self) -> Message:
        return build_message(self.subject, self.sender, self.recipients, self.text_body,
                             self.html_body, self.attachments)


def send_email(subject: str, sender: str, recipients: list[str], text_body: str,
               html_body: str, attachments: list[Attachment] | None = None,
               sync: bool = False) -> None:
    """Send an email. With sync=False it is handed to a background job (retried when the
    mail server is briefly unavailable); if the job queue is down it is sent right away."""
    queued = QueuedMail(subject, sender, list(recipients), text_body, html_body, attachments)
    if not sync:
        try:
            current_app.task_queue.enqueue(
                "app.tasks.send_email_job", queued, job_timeout=120,
                retry=rq.Retry(max=3, interval=current_app.config["MAIL_RETRY_INTERVALS"]),
                result_ttl=600,
                # A mail that failed for good stays in RQ's failed registry for operators, but
                # not for RQ's default of a year: it holds the whole text, reset links included.
                failure_ttl=MAIL_FAILURE_TTL,
                # RQ's default description is the call with its arguments: the whole mail,
                # in the worker's log, in Redis and in every dashboard.
                description=f"send_email: {queued.summary()}")
            return
        except redis.exceptions.RedisError as exc:
            log.warning("job queue unavailable, sending mail in the request: %s", exc)
    deliver(queued.message())


class MailAlreadySending(Exception):
    """Another attempt of the same job is sending this mail right now (or died doing so)."""


def send_email_once(key: str, **fields) -> bool:
    """Send synchronously unless a message with this key was already sent, so that a retried
    job never mails its user twice. Returns False when it had been sent before.

    A Redis marker claims the message before sending (atomically, so two attempts running at
    once cannot both send) and records it as sent after. Raises MailAlreadySending, a
    transient error, while another attempt holds the claim; a claim whose holder died lapses
    after MAIL_CLAIM_SECONDS."""
    marker = f"microblog:mail-sent:{key}"
    redis_client = current_app.redis
    if not redis_client.set(marker, "sending", nx=True, ex=MAIL_CLAIM_SECONDS):
        if redis_client.get(marker) == b"sent":
            log.info("mail %s already sent, not sending again", key)
            return False
        raise MailAlreadySending(key)
    try:
        deliver(build_message(**fields))
    except BaseException:
        redis_client.delete(marker)
        raise
    redis_client.set(marker, "sent", ex=7 * 24 * 3600)
    return True


def release_claim(key: str) -> None:
    """Drop an unfinished claim whose holder is known to be dead (its worker was killed), so
    the retry can send at once. A mail the server accepted in the instant before the kill
    may then be sent twice: better than never."""
    marker = f"microblog:mail-sent:{key}"
    if current_app.redis.get(marker) == b"sending":
        current_app.redis.delete(marker)
