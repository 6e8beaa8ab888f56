"""What went wrong in a job, in words its user reads, and whether trying again could help.

The lifecycle (app/jobs/lifecycle.py) asks `is_transient` to decide between a retry and a
failure, and `describe_failure` for the reason it records on the task; details stay in the
worker log and RQ's failed registry.

A reason is recorded in English (Task.error: the worker has no user's language, and operators
and logs read English) and translated when a user is shown it, in the web process:
`reason_for_reader`, for pages and the JSON and events that carry a task's state.
"""

from __future__ import annotations

import errno
import re
import smtplib
import socket

import sqlalchemy as sa
from flask_babel import gettext
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from app.email import MailAlreadySending
from app.imports.readers import REFUSALS, ArchiveRefused
from app.jobs.bootstrap import REDIS_LOST


def is_transient(exc: BaseException | None) -> bool:
    """Errors worth retrying: the mail server or network was briefly unavailable, or the
    worker died under the job. A bug or a timeout would only fail again, and so would an
    archive refused for what it is."""
    if isinstance(exc, ArchiveRefused):
        return False
    if isinstance(exc, (AbandonedJobError, WorkHorseKilled, MailAlreadySending, *REDIS_LOST)):
        return True
    if is_database_lost(exc):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, ConnectionError | TimeoutError | socket.timeout
                      | smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError)


# A full disk is not retried: the operator must free space, and every retry would fill it
# to the brim again, starving the database, the logs and the outbox on the same disk.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def is_database_lost(exc: BaseException | None) -> bool:
    """The database server went away (restart, failover, network): the connection broke, or
    none could be made. OperationalError is what drivers raise for both (and for a few other
    passing conditions: a deadlock, a lock timeout); retries are bounded either way."""
    return isinstance(exc, sa.exc.OperationalError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)


class WorkHorseKilled(Exception):
    """The process running the job was killed (SIGKILL, out of memory)."""


def N_(message: str) -> str:
    """Mark a reason for translation (N_ is one of babel's keywords) and return it as it is:
    it is recorded in English, and translated by reason_for_reader when shown."""
    return message


TIMED_OUT = N_("The task took too long and was stopped.")
WORKER_STOPPED = N_("The worker running this task stopped unexpectedly.")
MAIL_ALREADY_SENDING = N_("The email is already being sent by another attempt.")
QUEUE_UNAVAILABLE = N_("The job queue was briefly unavailable.")
DATABASE_UNAVAILABLE = N_("The database was briefly unavailable.")
OUT_OF_DISK = N_("The server ran out of disk space.")
FILE_UNWRITABLE = N_("The server could not write the export file.")
MAIL_REFUSED = N_("The mail server refused the message (%(code)s).")
MAIL_UNREACHABLE = N_("The mail server could not be reached.")
FAILED = N_("The task failed.")
FAILED_WITH = N_("The task failed: %(error)s.")


def describe_failure(exc: BaseException | None) -> str:
    """A short reason a user can read, in English (translated when shown: reason_for_reader);
    details stay in the worker log and RQ's registry."""
    reason = getattr(exc, "user_reason", None)  # an error that says it for itself
    if isinstance(reason, str):
        return reason
    if isinstance(exc, ArchiveRefused):  # what the file looked like, what is accepted
        return refusal_reason(exc)
    if isinstance(exc, JobTimeoutException):
        return TIMED_OUT
    if isinstance(exc, AbandonedJobError | WorkHorseKilled):
        return WORKER_STOPPED
    if isinstance(exc, MailAlreadySending):
        return MAIL_ALREADY_SENDING
    if isinstance(exc, REDIS_LOST):
        return QUEUE_UNAVAILABLE
    if is_database_lost(exc):
        return DATABASE_UNAVAILABLE
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return OUT_OF_DISK
    if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
        return FILE_UNWRITABLE
    if isinstance(exc, smtplib.SMTPResponseException):
        return MAIL_REFUSED % {"code": exc.smtp_code}
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | smtplib.SMTPException):
        return MAIL_UNREACHABLE
    if exc is None:
        return FAILED
    return FAILED_WITH % {"error": type(exc).__name__}


# The lifecycle records a failure it retries as its reason + RETRY_NOTE (" Retrying
# automatically.").
RETRYING = N_("%(reason)s Retrying automatically.")
# The reasons other modules record on a task, in English too, written there as they are here
# (reason_for_reader knows a reason by its exact English words, and shows one it does not
# know as it is): listed so that babel extracts them and a reader gets them translated.
RECORDED_ELSEWHERE = (
    N_("Replaced by a newer attempt at the same export."),  # lifecycle.SUPERSEDED_REASON
    N_("Background jobs are unavailable right now. Please try again later."),  # launch, retry
    N_("The task was lost by the job queue."),  # reconcile
    N_("Cancelled by an administrator."),  # operations.CANCELLED_REASON
    N_("Stopped by an administrator."),  # operations.STOPPED_REASON
    N_("Cancelled by you."),  # exports.actions.CANCELLED_BY_YOU
    N_("The export storage could not be reached."),  # exports.storage.StorageUnavailable
    N_("Replaced by a newer step of the same import."),  # tasks.NOT_THE_CURRENT_STEP
    # imports.centre.ArchiveMissing
    N_("The uploaded archive is no longer available. Please upload it again."),
)


def refusal_reason(exc: ArchiveRefused) -> str:
    """An archive's refusal as a task's reason: whole when it fits the column (255), else
    what the file looked like (the whole refusal is on the import: centre.record_refusal)."""
    reason = str(exc)
    if len(reason) > 255 and "reason" in exc.params:
        return exc.params["reason"][:255]
    return reason[:255] or FAILED


_PARAMETER = re.compile(r"%\((\w+)\)s")
# What a parameter's value may be, in a reason: a reason within it any text, a code or a name
# (any other parameter) one word.
_VALUE, _WORD = {"reason": ".+"}, r"\S+"


def _as_pattern(msgid: str) -> re.Pattern[str]:
    """The reasons `msgid` makes: its words as they are, each %(name)s captured."""
    parts = _PARAMETER.split(msgid)  # text, name, text, name, ..., text
    return re.compile("".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_VALUE.get(part, _WORD)})"
        for i, part in enumerate(parts)), re.DOTALL)


_REASONS = (RETRYING, TIMED_OUT, WORKER_STOPPED, MAIL_ALREADY_SENDING, QUEUE_UNAVAILABLE,
            DATABASE_UNAVAILABLE, OUT_OF_DISK, FILE_UNWRITABLE, MAIL_REFUSED, MAIL_UNREACHABLE,
            FAILED, FAILED_WITH, *RECORDED_ELSEWHERE, *REFUSALS)
_FIXED = frozenset(reason for reason in _REASONS if not _PARAMETER.search(reason))
_PARAMETERISED = [(_as_pattern(reason), reason) for reason in _REASONS
                  if _PARAMETER.search(reason)]


def reason_for_reader(reason: str | None) -> str | None:
    """A reason recorded on a task in the reader's language (the request's locale): a known
    English reason translated, its parameters put back in (a reason within a reason
    translated too); anything else (None, a reason this version does not know) as it is."""
    if not reason:
        return reason
    if reason in _FIXED:
        return gettext(reason)
    for pattern, msgid in _PARAMETERISED:
        if match := pattern.fullmatch(reason):
            return gettext(msgid, **{name: reason_for_reader(value) if name == "reason" else value
                                     for name, value in match.groupdict().items()})
    return reason


def task_for_reader(data: dict) -> dict:
    """A task's state as a user is sent it (Task.to_dict, the data of a task_progress
    notification), with its reason in the reader's language."""
    if not data.get("error"):
        return data
    return {**data, "error": reason_for_reader(data["error"])}


def notification_for_reader(name: str, data: object) -> object:
    """A notification's data as a user is sent it: a task's with its reason translated."""
    return task_for_reader(data) if name == "task_progress" and isinstance(data, dict) else data
