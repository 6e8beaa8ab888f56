"""What went wrong in a job, in words its user reads, and whether trying again could help.

The lifecycle (app/jobs/lifecycle.py) asks `is_transient` to decide between a retry and a
failure, and `describe_failure` for the reason it records on the task; details stay in the
worker log and RQ's failed registry.
"""

from __future__ import annotations

import errno
import smtplib
import socket

import sqlalchemy as sa
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from app.email import MailAlreadySending
from app.jobs.bootstrap import REDIS_LOST


def is_transient(exc: BaseException | None) -> bool:
    """Errors worth retrying: the mail server or network was briefly unavailable, or the
    worker died under the job. A bug or a timeout would only fail again."""
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


def describe_failure(exc: BaseException | None) -> str:
    """A short reason a user can read; details stay in the worker log and RQ's registry."""
    reason = getattr(exc, "user_reason", None)  # an error that says it for itself
    if isinstance(reason, str):
        return reason
    if isinstance(exc, JobTimeoutException):
        return "The task took too long and was stopped."
    if isinstance(exc, AbandonedJobError | WorkHorseKilled):
        return "The worker running this task stopped unexpectedly."
    if isinstance(exc, MailAlreadySending):
        return "The email is already being sent by another attempt."
    if isinstance(exc, REDIS_LOST):
        return "The job queue was briefly unavailable."
    if is_database_lost(exc):
        return "The database was briefly unavailable."
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return "The server ran out of disk space."
    if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
        return "The server could not write the export file."
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"The mail server refused the message ({exc.smtp_code})."
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | smtplib.SMTPException):
        return "The mail server could not be reached."
    if exc is None:
        return "The task failed."
    return f"The task failed: {type(exc).__name__}."
