"""The figures operators read about background jobs, from the Task rows and from RQ's own
records in Redis: the queues (depth, latency), per-type figures over the last day, the
workers, and one task's whole story (timings, attempts, reason, RQ's traceback).

Read-only: nothing here changes a task or a job. RQ's registries are counted without their
cleanup (which would run failure callbacks inside a web request)."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import rq
import sqlalchemy as sa
from flask import current_app
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.results import Result

from app import db
from app.models import Task, TaskStatus, utcnow
from app.redis_connection import redis_from_url

WINDOW = timedelta(hours=24)
# Job ids read from the head of a queue to find the oldest job still there (see oldest_wait).
LATENCY_PROBE = 10


def _naive_utc(value: datetime | None) -> datetime | None:
    """RQ's timestamps are aware UTC, our columns naive UTC: compare them as the latter."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def _text(value: object) -> str:
    """RQ's status enums (str subclasses) as their plain value."""
    return str(getattr(value, "value", value))


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (0 < fraction <= 1) of `values`; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def as_json(value: object) -> object:
    """Dataclasses, datetimes and lists of them as JSON-ready values (for --json)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.repr}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    return value


# --------------------------------------------------------------------------- summary

@dataclass
class TypeFigures:
    """One task type: what is queued and running now, and what ended in the window."""

    name: str
    queued: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None

    @property
    def ended(self) -> int:
        return self.finished + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        """Finished out of finished + failed (a cancellation is nobody's failure)."""
        judged = self.finished + self.failed
        return self.finished / judged if judged else None


@dataclass
class QueueFigures:
    name: str
    depth: int
    latency_seconds: float | None  # age of the oldest job waiting; None when none waits
    scheduled: int  # waiting for a time (retries with a backoff)
    started: int
    failed: int
    abandoned: int  # started, but their worker's heartbeat lapsed: recovery pending


@dataclass
class Summary:
    since: datetime
    queued: int
    running: int
    retrying: int  # queued again after a failed attempt
    finished: int
    failed: int
    cancelled: int
    queues: list[QueueFigures]
    types: list[TypeFigures]

    @property
    def scheduled(self) -> int:
        return sum(q.scheduled for q in self.queues)

    @property
    def depth(self) -> int:
        return sum(q.depth for q in self.queues)

    @property
    def latency_seconds(self) -> float | None:
        latencies = [q.latency_seconds for q in self.queues if q.latency_seconds is not None]
        return max(latencies) if latencies else None


def active_tasks() -> dict[tuple[str, str], int]:
    """How many tasks of each (type, status) are queued or running now, from the database."""
    rows = db.session.execute(
        sa.select(Task.name, Task.status, sa.func.count()).where(Task.complete.is_(False))
        .group_by(Task.name, Task.status))
    return {(name, status): count for name, status, count in rows}


def type_figures(window: timedelta = WINDOW) -> list[TypeFigures]:
    """Per task type: queued and running now; finished/failed/cancelled in the window, and the
    p50/p95 of their run time (started_at -> finished_at, the last attempt's)."""
    figures: dict[str, TypeFigures] = {}

    def of(name: str) -> TypeFigures:
        return figures.setdefault(name, TypeFigures(name))

    for (name, status), count in active_tasks().items():
        if status == TaskStatus.RUNNING:
            of(name).running += count
        else:
            of(name).queued += count
    durations: dict[str, list[float]] = {}
    ended = db.session.execute(
        sa.select(Task.name, Task.status, Task.started_at, Task.finished_at)
        .where(Task.complete.is_(True), Task.finished_at >= utcnow() - window))
    for name, status, started_at, finished_at in ended:
        figure = of(name)
        if status == TaskStatus.FINISHED:
            figure.finished += 1
        elif status == TaskStatus.FAILED:
            figure.failed += 1
        else:
            figure.cancelled += 1
        seconds = seconds_between(started_at, finished_at)
        if seconds is not None:
            durations.setdefault(name, []).append(seconds)
    for name, values in durations.items():
        figures[name].p50_seconds = percentile(values, 0.50)
        figures[name].p95_seconds = percentile(values, 0.95)
    return [figures[name] for name in sorted(figures)]


def queue_figures(queue: rq.Queue) -> QueueFigures:
    started = StartedJobRegistry(queue=queue)
    return QueueFigures(
        name=queue.name, depth=queue.count, latency_seconds=oldest_wait(queue),
        scheduled=ScheduledJobRegistry(queue=queue).get_job_count(cleanup=False),
        started=started.get_job_count(cleanup=False),
        failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
        abandoned=len(started.get_expired_job_ids()))


def oldest_wait(queue: rq.Queue) -> float | None:
    """Seconds the oldest job waiting in `queue` has waited; None when none waits. Ids at the
    head whose job data is gone (deleted, expired) are skipped, as RQ's dequeue skips them:
    they must not hide the wait of the jobs behind them. One round trip for the ids, one for
    up to LATENCY_PROBE jobs."""
    ids = queue.get_job_ids(0, LATENCY_PROBE)
    for job in Job.fetch_many(ids, connection=queue.connection):
        if job is not None and job.enqueued_at is not None:
            return seconds_between(_naive_utc(job.enqueued_at), utcnow())
    return None


def queues(connection: redis.Redis, configured: Iterable[str]) -> list[QueueFigures]:
    """Every queue RQ knows of, and the `configured` ones even before their first job."""
    names = {q.name for q in rq.Queue.all(connection=connection)} | set(configured)
    return [queue_figures(rq.Queue(name, connection=connection)) for name in sorted(names)]


def summary(window: timedelta = WINDOW) -> Summary:
    """The summary bar: tasks now and in the window, and every RQ queue's figures."""
    types = type_figures(window)
    retrying = db.session.scalar(sa.select(sa.func.count()).select_from(Task).where(
        Task.status == TaskStatus.QUEUED, Task.attempts > 0)) or 0
    return Summary(
        since=utcnow() - window, queued=sum(t.queued for t in types),
        running=sum(t.running for t in types), retrying=retrying,
        finished=sum(t.finished for t in types), failed=sum(t.failed for t in types),
        cancelled=sum(t.cancelled for t in types),
        queues=queues(current_app.redis, current_app.config["JOB_QUEUES"]), types=types)


# --------------------------------------------------------------------------- workers

@dataclass
class WorkerFigures:
    name: str
    hostname: str | None
    pid: int | None
    state: str  # RQ's (idle, busy, suspended, ...), or "dead"
    queues: list[str]
    current_job_id: str | None
    job_since: datetime | None
    last_heartbeat: datetime | None
    born: datetime | None
    successful_jobs: int
    failed_jobs: int
    rss_bytes: int | None  # the worker and its work horse; only for workers on this host


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of a local process and its children (the work horse), from /proc."""
    total = 0
    proc = Path("/proc") / str(pid)
    try:
        children = (proc / "task" / str(pid) / "children").read_text().split()
    except OSError:
        children = []
    for one in [str(pid), *children]:
        try:
            for line in (Path("/proc") / one / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            if one == str(pid):
                return None
    return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_connection() -> redis.Redis:
    """A Redis client of its own, with short timeouts, for reading workers: RQ's Worker objects
    raise the socket timeout of the connection they are given to their dequeue timeout
    (minutes), which must not happen to app.redis (a hung Redis must fail a request in
    seconds). The caller closes it."""
    return redis_from_url(current_app.config["REDIS_URL"], socket_connect_timeout=2,
                          socket_timeout=5)


def workers(connection: redis.Redis | None = None) -> list[WorkerFigures]:
    """Every worker RQ knows. One on this host whose process is gone, or whose job's
    heartbeat has lapsed, shows as dead until RQ's cleanup forgets it and recovers its job.
    `connection` is one from own_connection(); without it one is opened for the call."""
    if connection is None:
        connection = own_connection()
        try:
            return workers(connection)
        finally:
            connection.close()
    here = socket.gethostname()
    figures = [_worker_figures(worker, here, connection)
               for worker in rq.Worker.all(connection=connection)]
    return sorted(figures, key=lambda w: w.name)


def _worker_figures(worker: rq.Worker, here: str, connection: redis.Redis) -> WorkerFigures:
    local = worker.hostname == here and worker.pid is not None
    job_id = worker.get_current_job_id()
    job = None
    if job_id:
        try:
            job = Job.fetch(job_id, connection=connection)
        except NoSuchJobError:
            job = None
    state = worker.get_state()
    if (local and not _alive(worker.pid)) or (job is not None and _heartbeat_lapsed(job)):
        state = "dead"
    return WorkerFigures(
        name=worker.name, hostname=worker.hostname, pid=worker.pid, state=_text(state),
        queues=worker.queue_names(), current_job_id=job_id,
        job_since=_naive_utc(job.started_at) if job is not None else None,
        last_heartbeat=_naive_utc(worker.last_heartbeat), born=_naive_utc(worker.birth_date),
        successful_jobs=worker.successful_job_count, failed_jobs=worker.failed_job_count,
        rss_bytes=_rss_bytes(worker.pid) if local else None)


def _heartbeat_lapsed(job: Job) -> bool:
    registry = StartedJobRegistry(job.origin, connection=job.connection)
    return job.id in registry.get_expired_job_ids()


# --------------------------------------------------------------------------- one task

@dataclass
class TaskDetail:
    """One task as an operator reads it. `traceback` is RQ's record of the last failure (for
    admins only: it may name files and values); `reason` is what the user was told."""

    id: str
    name: str
    description: str | None
    username: str | None
    status: str
    progress: int
    attempts: int
    reason: str | None
    message: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    wait_seconds: float | None  # queued -> started (the latest attempt's start)
    run_seconds: float | None  # started -> finished (the latest attempt)
    job_status: str | None  # RQ's view; None when Redis holds no job (expired or deleted)
    worker: str | None
    retries_left: int | None
    traceback: str | None
    task: Task | None = field(default=None, repr=False)


def task_detail(task: Task) -> TaskDetail:
    job_status = worker = traceback = retries_left = None
    try:
        job = Job.fetch(task.id, connection=current_app.redis)
    except (NoSuchJobError, redis.exceptions.RedisError):
        job = None
    if job is not None:
        job_status = _text(job.get_status(refresh=False))
        worker = job.worker_name or None
        retries_left = job.retries_left
        result = job.latest_result()
        if result is not None and result.type == Result.Type.FAILED:
            traceback = result.exc_string
    return TaskDetail(
        id=task.id, name=task.name, description=task.description,
        username=task.user.username if task.user else None, status=task.status,
        progress=task.get_progress(),
        attempts=task.attempts, reason=task.error, message=task.result_message,
        queued_at=task.created_at, started_at=task.started_at, finished_at=task.finished_at,
        wait_seconds=seconds_between(task.created_at, task.started_at),
        run_seconds=seconds_between(task.started_at, task.finished_at),
        job_status=job_status, worker=worker, retries_left=retries_left, traceback=traceback,
        task=task)
