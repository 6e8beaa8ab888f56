"""Log formats for the web app and the workers.

Every line logged while a job runs carries the job's task id and type (JobContextFilter), and
LOG_FORMAT=json turns each line into one JSON object, for log shippers. The default text format
stays as it was; a job's lines end with `[task <id> <type>]`.

Imports nothing of ours: the worker's entry point (app/jobs/worker.py) uses it before the app
exists.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import rq

TEXT_FORMAT = "%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d]"

# The job a worker process is busy with, set around the whole job (app.jobs.worker.AppWorker) so
# that the worker's own lines before and after the task function ran carry it too. The work
# horse is forked inside it and inherits it.
_current_job: rq.job.Job | None = None

# Attributes every LogRecord has: anything else on a record came from `extra=` and goes into
# the JSON object as a field of its own (duration, outcome, ...). Except a job's arguments,
# which RQ puts in the extra of its failure line: they may be a user's mail.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "task_id", "task_type", "arguments", "kwargs"}


# URL paths that carry a secret, the reset link's token: wherever a URL is logged (the access
# log, a request's error line) the secret is replaced by its route's placeholder, so that a
# log reader cannot take over the account. Other paths name nothing secret (what they reach
# needs its owner's login).
_SECRET_IN_PATH = re.compile(r"(/auth/reset_password/)[^/?#\s\"']+")
# An API token (ApiToken.PREFIX), wherever it appears: a client that put it in a URL, or an
# exception's message that quoted a header.
_API_TOKEN = re.compile(r"(mbt_)[A-Za-z0-9_\-]+")


def redact_url(text: str) -> str:
    """`text` with the secret of any secret-carrying URL path in it, and any API token,
    replaced by `<token>`."""
    if "/reset_password/" in text:  # most lines have neither: skip the regexes
        text = _SECRET_IN_PATH.sub(r"\1<token>", text)
    if "mbt_" in text:
        text = _API_TOKEN.sub(r"\1<token>", text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record whose message holds a secret-carrying URL (Flask's "Exception on
    <path>" line, for one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def task_type(job: rq.job.Job) -> str:
    """A job's task type: its function's name (`app.tasks.export_posts` -> `export_posts`),
    which is the Task row's name for the app's own tasks."""
    try:
        return (job.func_name or "").rsplit(".", 1)[-1]
    except Exception:  # a job whose data cannot be read (unknown serializer, deleted)
        return "unknown"


def current_job() -> rq.job.Job | None:
    """The job this process is running (worker or work horse), if any."""
    return _current_job or rq.get_current_job()


@contextmanager
def job_context(job: rq.job.Job) -> Iterator[None]:
    global _current_job
    previous, _current_job = _current_job, job
    try:
        yield
    finally:
        _current_job = previous


class JobContextFilter(logging.Filter):
    """Adds `task_id` and `task_type` to every record (None outside a job). Goes on handlers,
    so that records propagated from any logger get them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            job = current_job()
            record.task_id = job.id if job is not None else None
            record.task_type = task_type(job) if job is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, task_id,
    task_type, exc_info when there is an exception, and the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_id": getattr(record, "task_id", None),
            "task_type": getattr(record, "task_type", None),
        }
        entry.update((key, value) for key, value in vars(record).items()
                     if key not in _RECORD_ATTRIBUTES and not key.startswith("_"))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class JobSuffixFormatter(logging.Formatter):
    """Wraps a text formatter: a job's lines end with `[task <id> <type>]`, others unchanged."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        task_id = getattr(record, "task_id", None)
        if task_id is None:
            return text
        first, newline, rest = text.partition("\n")  # after the line, not after a traceback
        return f"{first} [task {task_id} {record.task_type}]{newline}{rest}"


def formatter(log_format: str, text: logging.Formatter | None = None) -> logging.Formatter:
    """The formatter for LOG_FORMAT ("json" or "text"); `text` is the text one to keep."""
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    if log_format == "json":
        return JsonFormatter()
    if isinstance(text, JobSuffixFormatter):
        return text
    return JobSuffixFormatter(text or logging.Formatter(TEXT_FORMAT))


def prepare_handler(handler: logging.Handler, log_format: str) -> logging.Handler:
    handler.setFormatter(formatter(log_format, handler.formatter))
    if not any(isinstance(f, JobContextFilter) for f in handler.filters):
        handler.addFilter(JobContextFilter())
    if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
        handler.addFilter(RedactSecretsFilter())
    return handler


def configure_worker(log_format: str) -> None:
    """The logging of an `rq worker` process (called by AppWorker before it starts).

    `rq worker` has by now put its own handlers on the `rq.worker` logger (stdout, and stderr
    for errors; format from --log-format); it adds the same to `rq.job` and `rq.scheduler`
    later unless a handler is already in place. Text: RQ's handlers keep their format and
    gain the job suffix. JSON: one JSON handler on stdout at the root serves every logger
    (RQ's, the app's when LOG_TO_STDOUT, Python's warnings), so that every line is JSON.
    """
    rq_logger = logging.getLogger("rq.worker")
    if log_format != "json":
        for handler in rq_logger.handlers:
            prepare_handler(handler, log_format)
        return
    # RQ 3 stops its loggers' propagation when it gives them handlers; records then reach the
    # root's JSON handler only once those handlers are gone and propagation is back on. With a
    # handler at the root, RQ adds none later (it looks up the hierarchy).
    for name in ("rq.worker", "rq.job", "rq.scheduler"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.addHandler(prepare_handler(logging.StreamHandler(sys.stdout), log_format))
    logging.captureWarnings(True)
