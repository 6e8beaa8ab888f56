"""One way to send mail: send_email(). SMTP when MAIL_SERVER is set; otherwise every message
is written to a local outbox under instance/outbox that the /outbox pages show."""

from __future__ import annotations

import base64
import logging
import os
import smtplib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import rq
import rq.exceptions
import rq.job
from flask import current_app
from flask_mail import Connection, Message

from app import mail
from app.models import utcnow

log = logging.getLogger(__name__)

# (filename, media type, data): data is the content, or a function returning it in chunks,
# called when the mail is sent (a large file is then never held in memory, nor copied).
Attachment = tuple[str, str, "bytes | Callable[[], Iterable[bytes]]"]
MAIL_CLAIM_SECONDS = 120
CLAIM_PREFIX = "sending:"  # + the attempt's own random part (send_email_once)
MAIL_FAILURE_TTL = 7 * 24 * 3600
# Seconds a kept SMTP connection may sit idle before it is asked NOOP ahead of its next mail.
KEEP_IDLE_CHECK = 10


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


class StreamedMessage(Message):
    """A Message whose attachments may be read in chunks when it is sent. Each such
    attachment is built as a placeholder part (flask-mail's headers, MIME layout and
    base64 encoding as for any attachment) whose one line of base64 is replaced, as the
    message is written out, by the file's base64 lines: the mail costs a chunk of memory,
    not several copies of the file (the content, its base64 text, the message as text, the
    message as bytes, the SMTP data with its line ends fixed, ...)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[bytes, Callable[[], Iterable[bytes]]] = {}

    def attach_stream(self, filename: str, media_type: str,
                      chunks: Callable[[], Iterable[bytes]]) -> None:
        marker = f"microblog-attachment-{uuid.uuid4().hex}".encode()
        self.attach(filename, media_type, marker)
        self.streams[base64.b64encode(marker)] = chunks

    def iter_bytes(self) -> Iterator[bytes]:
        """The whole message as as_bytes() writes it (CRLF line ends: flask-mail's SMTP
        policy), in chunks."""
        head = self.as_bytes()
        for line_b64, chunks in self.streams.items():
            before, _, head = head.partition(line_b64 + b"\r\n")
            yield before
            yield from _base64_lines(chunks())
        yield head


# base64 lines of 76 characters encode 57 bytes each: encode a whole number of lines at once.
BASE64_BLOCK = 57 * 2048


def _base64_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The base64 lines of the content, CRLF-ended, in blocks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        if len(pending) < BASE64_BLOCK:
            continue
        whole = len(pending) - len(pending) % BASE64_BLOCK
        yield base64.encodebytes(pending[:whole]).replace(b"\n", b"\r\n")
        pending = pending[whole:]
    if pending:
        yield base64.encodebytes(pending).replace(b"\n", b"\r\n")


def build_message(subject: str, sender: str, recipients: list[str], text_body: str,
                  html_body: str, attachments: list[Attachment] | None = None) -> Message:
    msg = StreamedMessage(subject, sender=sender, recipients=recipients)
    msg.body = text_body
    msg.html = html_body
    for filename, media_type, data in attachments or []:
        if callable(data):
            msg.attach_stream(filename, media_type, data)
        else:
            msg.attach(filename, media_type, data)
    return msg


def deliver(msg: Message) -> None:
    """Hand one message to the SMTP server, or write it to the outbox. Raises what smtplib
    raises (the caller decides about retries)."""
    if outbox_enabled():
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        tmp = outbox_dir() / (name + ".part")
        with open(tmp, "wb") as out:
            out.writelines(msg.iter_bytes() if isinstance(msg, StreamedMessage)
                           else [msg.as_bytes()])
        tmp.rename(outbox_dir() / name)
    else:
        with smtp_connection() as connection:
            if isinstance(msg, StreamedMessage) and msg.streams:
                _send_streamed(msg, connection)
            else:
                connection.send(msg)


class KeptSmtpConnection:
    """One SMTP connection kept open across the mails a long-lived process sends (a pool
    worker: app/jobs/pool.py), instead of flask-mail's connect, EHLO (STARTTLS, LOGIN) and
    QUIT around every mail, which cost most of a short mail job.

    A connection idle for KEEP_IDLE_CHECK seconds is asked NOOP before it is used (servers
    close idle ones: Postfix after 300 s) and replaced if that fails; nothing is ever sent
    twice within an attempt. A send that fails drops the connection, and the error goes to
    the job as before (RQ retries it, the mail claim holds): the next mail opens a new one."""

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.pid = os.getpid()
        self.last_used = 0.0

    def get(self) -> Connection:
        if self.connection is not None and self.pid != os.getpid():
            self.connection = None  # a forked child's copy: the parent's socket, not ours
        if self.connection is not None and \
                time.monotonic() - self.last_used > KEEP_IDLE_CHECK and not self.alive():
            self.close()
        if self.connection is None:
            self.connection = mail.connect().__enter__()
            self.pid = os.getpid()
        return self.connection

    def alive(self) -> bool:
        try:
            return self.connection.host.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None or connection.host is None:
            return
        try:
            connection.host.quit()
        except (smtplib.SMTPException, OSError):
            connection.host.close()


_kept: KeptSmtpConnection | None = None


def keep_smtp_connection() -> None:
    """From now on this process keeps one SMTP connection across mails (a pool worker)."""
    global _kept
    _kept = _kept or KeptSmtpConnection()


def close_kept_smtp_connection() -> None:
    """QUIT the kept connection, if any (a pool worker about to exit)."""
    if _kept is not None:
        _kept.close()


@contextmanager
def smtp_connection() -> Iterator[Connection]:
    """flask-mail's connection for one mail: the process's kept one if it keeps one."""
    if _kept is None or mail.suppress:
        with mail.connect() as connection:
            yield connection
        return
    connection = _kept.get()
    try:
        yield connection
    except BaseException:
        _kept.close()  # in an unknown state: the next mail starts afresh
        raise
    _kept.last_used = time.monotonic()


def _send_streamed(msg: StreamedMessage, connection: Connection) -> None:
    """What flask-mail's send does (checks, Date, SMTP over `connection`, the
    email_dispatched signal), with the DATA written in chunks as smtplib's sendmail
    would write the whole message: CRLF line ends, leading dots doubled (base64 lines have
    none), ended by CRLF.CRLF."""
    from flask_mail import BadHeaderError, email_dispatched, sanitize_address, sanitize_addresses

    assert msg.send_to, "No recipients have been added"
    assert msg.sender, "The message does not specify a sender"
    if msg.has_bad_headers():
        raise BadHeaderError
    if msg.date is None:
        msg.date = time.time()
    smtp = connection.host
    if smtp is not None:  # None: MAIL_SUPPRESS_SEND
        _smtp_send(smtp, sanitize_address(msg.sender), list(sanitize_addresses(msg.send_to)),
                   msg.iter_bytes(), msg.mail_options, msg.rcpt_options)
    email_dispatched.send(current_app._get_current_object(), message=msg)


def _smtp_send(smtp: smtplib.SMTP, sender: str, recipients: list[str],
               data: Iterable[bytes], mail_options=(), rcpt_options=()) -> None:
    """smtplib.SMTP.sendmail with the message as chunks of CRLF-ended bytes (recipients
    refused while others are accepted are not an error, as with sendmail)."""
    smtp.ehlo_or_helo_if_needed()
    code, resp = smtp.mail(sender, mail_options)
    if code != 250:
        smtp._rset() if code == 421 else smtp.rset()
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused = {}
    for recipient in recipients:
        code, resp = smtp.rcpt(recipient, rcpt_options)
        if code not in (250, 251):
            refused[recipient] = (code, resp)
    if len(refused) == len(recipients):
        smtp.rset()
        raise smtplib.SMTPRecipientsRefused(refused)
    code, resp = smtp.docmd("data")
    if code != 354:
        smtp.rset()
        raise smtplib.SMTPDataError(code, resp)
    last = b"\r\n"  # the message's start counts as a line start
    for chunk in data:
        if not chunk:
            continue
        chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if last.endswith(b"\r\n") and chunk.startswith(b"."):
            chunk = b"." + chunk
        smtp.send(chunk)
        last = chunk
    smtp.send(b".\r\n" if last.endswith(b"\r\n") else b"\r\n.\r\n")
    code, resp = smtp.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)


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
    mail server is briefly unavailable); if the job queue is down it is sent right away.
    An attachment given as chunks is read whole before it is queued (a job carries bytes)."""
    if not sync and attachments:
        attachments = [(name, media_type, b"".join(data()) if callable(data) else data)
                       for name, media_type, data in attachments]
    queued = QueuedMail(subject, sender, list(recipients), text_body, html_body, attachments)
    if not sync:
        try:
            # Its own queue, which every worker takes first: a password-reset mail never
            # waits behind exports (docs/operations.md, "Queues").
            current_app.job_queues[current_app.config["MAIL_QUEUE"]].enqueue(
                "app.tasks.send_email_job", queued, job_timeout=120,
                retry=rq.Retry(max=3, interval=current_app.config["MAIL_RETRY_INTERVALS"]),
                on_failure=rq.job.Callback(on_mail_job_failure),
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
    after MAIL_CLAIM_SECONDS.

    Each attempt's claim is its own (`sending:<random>`): when Redis restarts, redis-py sends
    again a command whose answer was lost with the connection, and the claim of the first
    SET may have been made already. The SET sent again then finds this attempt's own claim,
    which is not another attempt's."""
    marker = f"microblog:mail-sent:{key}"
    redis_client = current_app.redis
    claim = f"{CLAIM_PREFIX}{uuid.uuid4().hex}".encode()
    if not redis_client.set(marker, claim, nx=True, ex=MAIL_CLAIM_SECONDS):
        held = redis_client.get(marker)
        if held == b"sent":
            log.info("mail %s already sent, not sending again", key)
            return False
        if held != claim:
            raise MailAlreadySending(key)
    try:
        deliver(build_message(**fields))
    except BaseException:
        if redis_client.get(marker) == claim:  # ours: the retry may send at once
            redis_client.delete(marker)
        raise
    redis_client.set(marker, "sent", ex=7 * 24 * 3600)
    return True


def release_claim(key: str, connection: redis.Redis | None = None) -> None:
    """Drop an unfinished claim whose holder is known to be dead (its worker was killed), so
    the retry can send at once. A mail the server accepted in the instant before the kill
    may then be sent twice: better than never."""
    marker = f"microblog:mail-sent:{key}"
    connection = connection or current_app.redis
    if (connection.get(marker) or b"").startswith(b"sending"):  # a claim, not b"sent"
        connection.delete(marker)


def on_mail_job_failure(job: rq.job.Job, connection: redis.Redis, exc_type, exc_value,
                        traceback) -> None:
    """RQ's failure callback of a mail job, also where RQ's maintenance finds it abandoned
    (its worker died unseen): the dead attempt's claim goes, so that the retry sends."""
    if isinstance(exc_value, rq.exceptions.AbandonedJobError):
        release_claim(job.id, connection)
