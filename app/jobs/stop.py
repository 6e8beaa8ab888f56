"""How a request to stop reaches a running job, on any host: a flag in Redis that the task reads
at each progress report, and the same request sent to the worker running it over RQ's own
channel to that worker. The request carries when it was made and the grace it gives, on Redis's
clock; past the grace the worker kills its work horse (AppWorker.stop_if_cancelled). What a
cancel does to the task itself is app/jobs/lifecycle.py's `cancel`."""

from __future__ import annotations

import json

import redis
from flask import current_app
from rq.command import send_command
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.jobs.types import RESULT_TTL

# The request outlives the job's result (RESULT_TTL) by nothing: after that no worker runs it.
FLAG_TTL = RESULT_TTL
# The cancel request, sent to the worker running the job over RQ's own channel to it (as
# RQ's stop-job command is), so that a stop with no grace is not left to that worker's next
# heartbeat. The worker decides, from the request (AppWorker.stop_if_cancelled).
CANCEL_COMMAND = "microblog-cancel"


def flag_key(task_id: str) -> str:
    return f"microblog:task:{task_id}:cancel"


def ask_to_stop(connection: redis.Redis, task_id: str, grace: float) -> Job | None:
    """The cancel request: the flag that the task reads at each progress report and its
    worker at each heartbeat, and the same request sent to the worker running the job, if
    one is. Returns the task's job (None: RQ has none). Raises RedisError."""
    seconds, microseconds = connection.time()
    request = json.dumps({"at": seconds + microseconds / 1e6, "grace": grace})
    try:
        job = Job.fetch(task_id, connection=connection)
    except NoSuchJobError:
        job = None
    if job is not None and job.get_status(refresh=False) == JobStatus.STARTED and job.worker_name:
        # Before the flag and the row: with no grace, the attempt is killed before it can
        # see either and stop on its own (RQ would then file it as failed, or finished).
        send_command(connection, job.worker_name, CANCEL_COMMAND, job_id=task_id,
                     request=request)
    connection.set(flag_key(task_id), request, ex=FLAG_TTL)
    return job


def requested(task_id: str) -> bool:
    """Whether the task was cancelled (one Redis read: cheap enough for every batch)."""
    try:
        return bool(current_app.redis.exists(flag_key(task_id)))
    except redis.exceptions.RedisError:
        return False  # set_progress still reads the row


def hard_stop_due(connection: redis.Redis, task_id: str,
                  request: str | bytes | None = None) -> bool:
    """Whether the task's cancel request is older than the grace it gave, by Redis's clock:
    the worker running the task then kills its work horse. `request` is the copy a cancel
    sent to the worker (its flag is read when None). One round trip; needs no app, so that
    AppWorker can ask from its own process."""
    with connection.pipeline(transaction=False) as pipeline:
        if request is None:
            pipeline.get(flag_key(task_id))
        pipeline.time()
        *flag, (seconds, microseconds) = pipeline.execute()
    request = flag[0] if flag else request
    if request is None:
        return False
    try:
        asked = json.loads(request)
        deadline = float(asked["at"]) + float(asked["grace"])
    except (ValueError, TypeError, KeyError):
        return False  # not a request cancel made: the task is only asked to stop
    return seconds + microseconds / 1e6 >= deadline


def forget(connection: redis.Redis, task_id: str) -> None:
    """Drop the task's request: it is about to run again (an operator's retry), and an old
    request would stop the new attempt at its first progress report."""
    connection.delete(flag_key(task_id))
