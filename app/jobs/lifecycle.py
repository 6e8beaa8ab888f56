"""The task lifecycle: the one place that knows both the Task row and the RQ job.

Launch (commit the row, then enqueue), start, progress, finish, fail, cancel, and `end`, the
one way a task reaches a terminal status. Task functions in app/tasks.py call `start`,
`Progress.update` and `finish`; RQ calls `on_job_failure`, which asks app/jobs/failures.py
what went wrong. Tasks RQ could not report on are brought in line by app/jobs/reconcile.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import redis
import rq
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, has_app_context
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.job import Callback, Job, JobStatus
from sqlalchemy.exc import IntegrityError

from app import db, events, logs
from app.email import release_claim
from app.events import changes
from app.exports.centre import Superseded, attempt_superseded
from app.jobs import metrics, stop, types
from app.jobs.bootstrap import get_worker_app
from app.jobs.failures import WorkHorseKilled, describe_failure, is_transient
from app.models import Export, Notification, Task, TaskStatus, User, utcnow

log = logging.getLogger(__name__)

RETRY_NOTE = " Retrying automatically."
# Said wherever a task cannot be queued because Redis is down: its reason, and the refusal.
# Reasons are recorded in English, as operators and logs read them; the user reads them in
# their language (failures.reason_for_reader, whose table lists these).
JOBS_UNAVAILABLE = "Background jobs are unavailable right now. Please try again later."


class TaskAlreadyRunning(Exception):
    """The user already has a task of this name queued or running."""


class JobsUnavailable(Exception):
    """Redis could not be reached; the task was recorded as failed."""


# --------------------------------------------------------------------------- launch

def launch(user: User, name: str, description: str, *args,
           attach: Callable[[Task], None] | None = None, **kwargs) -> Task:
    """Record a task for `user` and enqueue `app.tasks.<name>(user.id, *args, **kwargs)`.
    `attach(task)`, when given, runs before the commit, so rows that refer to the task (an
    Export) are committed with it, or not at all.

    The Task row is committed before the job is enqueued, under the job id it will have, so a
    worker can never start a job whose row it cannot find. Raises TaskAlreadyRunning when the
    user has one of that name queued or running (the database's unique constraint decides,
    so two simultaneous requests cannot both win), and JobsUnavailable when Redis is down
    (the task is then recorded as failed with that reason).
    """
    kind = types.task_type(name)
    task = Task(id=str(uuid.uuid4()), name=name, description=description, user_id=user.id,
                status=TaskStatus.QUEUED, active_name=name, progress=0, created_at=utcnow())
    db.session.add(task)
    try:
        if attach is not None:
            db.session.flush()  # the constraint refuses here, before attach adds its rows
            attach(task)
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise TaskAlreadyRunning(name) from exc

    kwargs.setdefault("job_timeout", kind.job_timeout(user))
    if (retry := kind.retry()) is not None:
        kwargs.setdefault("retry", retry)
    try:
        kind.job_queue().enqueue(
            # For operators (worker log, dashboards): what runs for whom, in English, and
            # never the arguments (RQ's default description) or the user's own words.
            "app.tasks." + name, user.id, *args, job_id=task.id,
            description=f"{name} for user {user.id}",
            on_failure=Callback(on_job_failure), result_ttl=types.RESULT_TTL,
            failure_ttl=types.RESULT_TTL,
            meta={"progress": 0}, **kwargs)
    except redis.exceptions.RedisError as exc:
        log.error("Could not enqueue task %s: %s", task.id, exc)
        end(task, TaskStatus.FAILED, error=JOBS_UNAVAILABLE)
        raise JobsUnavailable(str(exc)) from exc
    return task


# --------------------------------------------------------------------------- current attempt

EXPORT_TASK = "export_posts"
SUPERSEDED_REASON = "Replaced by a newer attempt at the same export."


def superseded(task: Task, job: Job | None = None) -> Superseded | None:
    """attempt_superseded for a task found by itself: what operators' actions ask before
    they run a task again (app/jobs/operations.py, and so /admin/jobs and `flask tasks`). The
    export a task works on is named in its job's arguments (`job`, or fetched from Redis);
    a task whose job is gone (nothing can run it again), or that works on no export, is
    superseded by nothing. Raises RedisError when Redis cannot be reached."""
    if task.name != EXPORT_TASK:
        return None
    if db.session.scalar(sa.select(Export.id).where(Export.task_id == task.id)) is not None:
        return None
    if job is None:
        try:
            job = Job.fetch(task.id, connection=current_app.redis)
        except NoSuchJobError:
            return None
    export_id = job.kwargs.get("export_id") or (job.args[1] if len(job.args) > 1 else None)
    if export_id is None:  # launched without an export: its first attempt records one
        return None
    return attempt_superseded(task.id, db.session.get(Export, export_id), export_id)


def end_if_superseded(task: Task | None, export: Export | None, export_id: str) -> None:
    """In the worker, before an attempt touches its export (None: the export is gone): when
    it is no longer the export's current attempt (only operators' tools, or RQ's own, could
    have queued it), end it cancelled, saying so, and raise TaskNotActive."""
    if task is None or (why := attempt_superseded(task.id, export, export_id)) is None:
        return
    log.warning("Not running %s", why)
    end(task, TaskStatus.CANCELLED, error=SUPERSEDED_REASON)
    raise TaskNotActive(str(why))


# --------------------------------------------------------------------------- cancel

def cancel(task: Task, reason: str, grace: float | None = None) -> None:
    """Cancel a task, for its user (app/exports/centre.py) and for an operator
    (app/jobs/operations.py, and so /admin/jobs and `flask tasks cancel`) alike. The row ends
    `cancelled` at once, with `reason`. A queued job never starts (start refuses an ended
    task, and RQ cancels the job). A running one is asked to stop first: it sees the request
    at its next progress report (Progress.update, ensure_active), cleans up after itself (no
    partial file, no mail) and returns. If it is still running `grace` seconds later
    (TASK_CANCEL_GRACE when None; 0 stops it now), the worker running it kills its work
    horse (AppWorker.stop_if_cancelled): RQ files the job as stopped, not failed, and never
    retries it; the row stays `cancelled`. A plain `rq worker` does not take that last step:
    a job it runs that never reports progress ends at its job_timeout.

    The request carries when it was made and the grace, on Redis's clock, so that a worker on
    any host reads the same deadline. Raises TaskNotActive when the task has already ended.
    With Redis down the row still decides (start and set_progress refuse an ended task)."""
    if task.complete:
        raise TaskNotActive(f"task {task.id} is already {task.status}")
    if grace is None:
        grace = current_app.config["TASK_CANCEL_GRACE"]
    try:
        job = stop.ask_to_stop(current_app.redis, task.id, grace)
    except redis.exceptions.RedisError as exc:
        log.warning("Could not flag task %s as cancelled: %s", task.id, exc)
        job = None
    end(task, TaskStatus.CANCELLED, error=reason)
    if job is not None and job.get_status(refresh=False) in (
            JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
        try:
            job.cancel()
        except rq.exceptions.InvalidJobOperation:  # taken by a worker meanwhile: start refuses
            pass
        except redis.exceptions.RedisError as exc:
            log.warning("Could not cancel job %s: %s", task.id, exc)


# --------------------------------------------------------------------------- worker side

def _current_task(job: Job | None) -> Task | None:
    if job is None:
        return None
    db.session.rollback()  # start from fresh data; a row may have changed under us
    return db.session.get(Task, job.id)


def start() -> Task | None:
    """Mark the current job's task as running. Returns None when the job has no Task row
    (enqueued by hand, as in the tutorial's shell session). Raises TaskNotActive when the
    row is already terminal (cancelled, or failed by reconcile): the job must not run."""
    job = rq.get_current_job()
    if job is None:
        return None
    db.session.rollback()  # start from fresh data; a row may have changed under us
    task = _start_by_statement(job.id) if _update_returns() else None
    if task is None:
        task = db.session.get(Task, job.id)
        if task is None:
            return None
        if task.complete:
            raise TaskNotActive(f"task {task.id} is already {task.status}")
        _mark_running(task)
        _count_start(task.name)
        db.session.commit()
    return task


def _count_start(task_type: str) -> None:
    """Count the attempt's start with the commit that marks it running (in the pipeline that
    publishes the commit's events: one round trip to Redis)."""
    events.after_commit(db.session, lambda pipeline: metrics.job_started(pipeline, task_type))


# The columns Task.to_dict reads, returned by the lifecycle's UPDATEs for the notification.
_TASK_TABLE = Task.__table__
_NOTIFIED = [_TASK_TABLE.c[name] for name in (
    "id", "name", "description", "user_id", "status", "progress", "error", "result_message",
    "started_at")]


@cache
def _start_statement() -> sa.Update:
    """start's UPDATE, built once (AppWorker's warm-up builds it for every work horse): the
    task `:task_id`, if still active, marked running at `:now`."""
    return (sa.update(_TASK_TABLE)
            .where(_TASK_TABLE.c.id == sa.bindparam("task_id"),
                   _TASK_TABLE.c.complete.is_(False))
            .values(status=TaskStatus.RUNNING, started_at=sa.bindparam("now"),
                    attempts=_TASK_TABLE.c.attempts + 1)
            .returning(*_NOTIFIED, _TASK_TABLE.c.attempts, _TASK_TABLE.c.active_name,
                       _TASK_TABLE.c.complete, _TASK_TABLE.c.created_at,
                       _TASK_TABLE.c.finished_at, _TASK_TABLE.c.dismissed)
            .execution_options(changes_owner=changes.PUBLISHED))  # start's _notify


@cache
def _finish_statement(with_message: bool) -> sa.Update:
    """finish's UPDATE, built once: the task `:task_id`, if running, ended as _mark_ended
    ends a finished one at `:now`, with the result `:message` when there is one."""
    values = dict(status=TaskStatus.FINISHED, complete=True, active_name=None,
                  finished_at=sa.bindparam("now"), progress=100, error=None)
    if with_message:
        values["result_message"] = sa.bindparam("message")
    return (sa.update(_TASK_TABLE)
            .where(_TASK_TABLE.c.id == sa.bindparam("task_id"),
                   _TASK_TABLE.c.status == TaskStatus.RUNNING)
            .values(**values).returning(*_NOTIFIED)
            .execution_options(changes_owner=changes.PUBLISHED))  # finish's _notify


def _update_returns() -> bool:
    """Whether the database returns rows from an UPDATE (SQLite >= 3.35 and PostgreSQL do;
    MariaDB does not): the lifecycle's common transitions are then one statement each."""
    return db.session.get_bind().dialect.update_returning


def _start_by_statement(task_id: str) -> Task | None:
    """start's common case in one UPDATE ... RETURNING, the notification, one commit; no ORM
    load or flush. None when the row is not there or not active: the caller then reads it
    to tell which (and what _mark_running does, this does, on the table)."""
    row = db.session.execute(_start_statement(), {"task_id": task_id, "now": utcnow()}).first()
    if row is None:
        db.session.rollback()
        return None
    task = Task(**row._asdict())
    _notify(task)
    _count_start(task.name)
    db.session.commit()
    # The row as the UPDATE returned it, in the session without a query (for the export);
    # onto the session's own instance of the row when it has one (a worker in the web's
    # process, as in the tests).
    so.make_transient_to_detached(task)
    return db.session.merge(task, load=False)


def _mark_running(task: Task) -> None:
    task.status = TaskStatus.RUNNING
    task.started_at = utcnow()
    task.attempts += 1
    _notify(task)


class TaskNotActive(Exception):
    """The job's task was ended elsewhere; the job stops without doing anything."""


class Progress:
    """Reports progress of the current job: job.meta['progress'] (as the tutorial does),
    the Task row and a `task_progress` notification. Writes only when the whole percentage
    grows and at most every TASK_PROGRESS_INTERVAL seconds, so a task makes at most ~100 progress
    writes whatever the amount of work, and a fast one only a few (each write is a commit):
    the first one TASK_PROGRESS_INTERVAL after the work started, so work shorter than that
    writes none (the page goes from `running` at 0 % to finished)."""

    def __init__(self, total: int, unit: str | None = None) -> None:
        self.total = max(total, 0)
        self.unit = unit  # what is counted ("posts"): the page shows "12,400 of 100,000 posts"
        self.job = rq.get_current_job()
        self.last_percent = -1
        self.started = time.monotonic()
        self.last_write = self.started
        self.interval = current_app.config["TASK_PROGRESS_INTERVAL"]

    def update(self, done: int) -> None:
        """Report `done` units of `total`. Raises TaskNotActive when the task was cancelled
        (checked on every call: callers report once per batch of work)."""
        if self.job is not None and stop.requested(self.job.id):
            raise TaskNotActive(f"task {self.job.id} was cancelled")
        # 100 is reserved for `finish`: progress never claims success before it happened.
        percent = 99 if self.total == 0 else min(int(100 * done / self.total), 99)
        if percent <= self.last_percent:
            return
        now = time.monotonic()
        if now - self.last_write < self.interval:
            return
        self.last_percent, self.last_write = percent, now
        set_progress(percent, self.job, self.detail(done, now))

    def detail(self, done: int, now: float) -> dict:
        """The counts and the estimate shown beside the bar: the rate so far, extrapolated."""
        detail: dict = {"done": done, "total": self.total, "unit": self.unit}
        elapsed = now - self.started
        if done > 0 and elapsed > 0:
            detail["eta"] = round(elapsed * (self.total - done) / done, 1)
        return detail


def ensure_active() -> None:
    """Raise TaskNotActive if the current job's task was cancelled or ended elsewhere (the
    Redis flag, then the row): the last check before an effect that cannot be taken back,
    such as a mail."""
    job = rq.get_current_job()
    if job is None:
        return
    if stop.requested(job.id):
        raise TaskNotActive(f"task {job.id} was cancelled")
    task = _current_task(job)
    if task is not None and task.complete:
        raise TaskNotActive(f"task {task.id} is already {task.status}")


def set_progress(progress: float, job: Job | None = None, detail: dict | None = None) -> None:
    """Write progress for the current job: meta, Task row and a notification (one commit),
    with `detail` (counts, estimate) in the notification only."""
    job = job or rq.get_current_job()
    if job is None:
        return
    job.meta["progress"] = progress
    job.save_meta()
    task = db.session.get(Task, job.id)
    if task is None:
        return
    if task.complete:
        raise TaskNotActive(f"task {task.id} is already {task.status}")
    task.progress = int(progress)
    _notify(task, detail)
    db.session.commit()


def finish(message: str | None = None) -> None:
    """Mark the current job's task finished (progress 100) with a message for the user."""
    job = rq.get_current_job()
    if job is not None:
        job.meta["progress"] = 100
        if _update_returns() and _finish_by_statement(job, message):
            return
        job.save_meta()
    task = _current_task(job)
    if task is not None and not task.complete:
        end(task, TaskStatus.FINISHED, message=message)


def _finish_by_statement(job: Job, message: str | None) -> bool:
    """finish's common case, a running task, as _end does it (_mark_ended's columns, the
    notification, one commit, the attempt recorded) in one UPDATE ... RETURNING, and the
    job's meta (progress 100) written with the commit's events. False when the task is not
    running (not there, ended elsewhere, or never started): the caller then takes the
    general path."""
    db.session.rollback()  # start from fresh data, as _current_task does
    params = {"task_id": job.id, "now": utcnow()}
    if message is not None:
        params["message"] = message[:255]
    row = db.session.execute(_finish_statement(message is not None), params).first()
    if row is None:
        db.session.rollback()
        return False
    task = Task(**row._asdict())  # never added to the session: only read for the payload
    _notify(task)
    meta = job.serializer.dumps(job.meta)
    events.after_commit(db.session, lambda pipeline: pipeline.hset(job.key, "meta", meta))
    _commit_ended(AttemptEnd(task.id, task.name, TaskStatus.FINISHED, _attempt_duration(task)))
    return True


def on_job_failure(job: Job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback: runs in the work horse when the task raised or timed out, and
    wherever RQ cleans up an abandoned job. Decides retry or failure and records it."""
    with _app_context():
        if not is_transient(exc_value):
            job.retries_left = 0  # RQ reads this right after the callback: do not retry
        elif isinstance(exc_value, AbandonedJobError):
            # The worker died, not the work: requeue at once rather than through the
            # scheduler, whose lock the dead worker may hold for another minute.
            job.retry_intervals = None
        record_failure(job.id, exc_value, will_retry=job.should_retry)


def record_failure(task_id: str, exc: BaseException | None, will_retry: bool,
                   process_dead: bool = False) -> None:
    """Record on the task that its attempt failed with `exc` (RQ retries it, or not). When the
    process that ran it died (`process_dead`, or what `exc` says), its unfinished mail claim
    goes too, with a Task row or without (a mail job: app.tasks.send_email_job)."""
    if process_dead or isinstance(exc, AbandonedJobError | WorkHorseKilled):
        release_claim(task_id)  # the dead attempt's unfinished mail (see app.email)
    db.session.rollback()  # the failure may have broken the session's transaction
    task = db.session.get(Task, task_id)
    if task is None or task.complete:
        db.session.rollback()
        return
    reason = describe_failure(exc)
    if will_retry:
        was_running = task.status == TaskStatus.RUNNING
        task.status = TaskStatus.QUEUED
        task.error = reason + RETRY_NOTE
        _notify(task)
        _commit_ended(AttemptEnd.of(task, "retried", was_running))
    else:
        end(task, TaskStatus.FAILED, error=reason)


# --------------------------------------------------------------------------- state changes

def end(task: Task, status: str, error: str | None = None, message: str | None = None) -> None:
    """Move a task to a terminal status, notify its user, commit. The one place that does."""
    was_running = task.status == TaskStatus.RUNNING
    _mark_ended(task, status, error, message)
    _commit_ended(AttemptEnd.of(task, status, was_running))


def _mark_ended(task: Task, status: str, error: str | None, message: str | None) -> None:
    task.status = status
    task.complete = True
    task.active_name = None
    task.finished_at = utcnow()
    if status == TaskStatus.FINISHED:
        task.progress = 100
        task.error = None
    if error is not None:
        task.error = error[:255]
    if message is not None:
        task.result_message = message[:255]
    _notify(task)


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt at a task ended: finished, failed, retried or cancelled. Made before
    the commit (which expires the row: reading it afterwards would cost a query), counted
    with it and logged after it (_commit_ended)."""

    task_id: str
    task_type: str
    outcome: str
    duration: float | None  # seconds; None when it never started

    @classmethod
    def of(cls, task: Task, outcome: str, was_running: bool) -> AttemptEnd:
        return cls(task.id, task.name, outcome,
                   _attempt_duration(task) if was_running else None)

    def count(self, pipeline) -> None:
        """The metrics counted (app/jobs/metrics.py), in the pipeline sent after the commit."""
        metrics.job_ended(pipeline, self.task_type, self.outcome, self.duration)

    def record(self) -> None:
        """The one line logged."""
        duration = self.duration
        log.info("Task %s (%s) %s after %s", self.task_id, self.task_type, self.outcome,
                 "never started" if duration is None else f"{duration:.3f} s",
                 extra={"task_id": self.task_id, "task_type": self.task_type,
                        "outcome": self.outcome,
                        "duration": None if duration is None else round(duration, 3)})


def _commit_ended(ended: AttemptEnd) -> None:
    """Commit the session (the attempt's end, its notification) with the attempt counted in
    the pipeline that publishes the commit's events (app/events/), then log it."""
    events.after_commit(db.session, ended.count)
    db.session.commit()
    ended.record()


def _attempt_duration(task: Task) -> float | None:
    # RQ's start time when this process runs the job: the row's is whole seconds on MariaDB.
    job = logs.current_job()
    started = job.started_at if job is not None and job.id == task.id else None
    if started is None:
        if task.started_at is None:
            return None
        started = task.started_at.replace(tzinfo=UTC)
    elif started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return max(0.0, (utcnow().replace(tzinfo=UTC) - started).total_seconds())


def reopen(task: Task) -> None:
    """Put an ended task back in the queue for another attempt (an operator's retry; the
    caller requeues its job afterwards, as launch enqueues after the commit). Its cancel
    flag goes first: it would stop the new attempt at its first progress report. Raises
    TaskAlreadyRunning when its user has another of that name in progress, and RedisError
    (having changed nothing) when Redis cannot be reached."""
    stop.forget(current_app.redis, task.id)
    task.status = TaskStatus.QUEUED
    task.complete = False
    task.active_name = task.name
    task.progress = 0
    task.error = task.result_message = None
    task.started_at = task.finished_at = None
    task.dismissed = False
    try:
        _notify(task)  # its query flushes the row: the constraint may already refuse here
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise TaskAlreadyRunning(task.name) from exc


def _notify(task: Task, detail: dict | None = None) -> None:
    """The user's `task_progress` notification of this task, published to their open pages
    when the caller commits (app/events/). By the task's user id: loading the User would
    cost a query in every start and finish."""
    Notification.replace(task.user_id, "task_progress", task.to_dict() | (detail or {}),
                         topic=task.id)


def warm_up() -> None:
    """Run a task's start and finish statements once, on a made-up user and task, then roll
    everything back: AppWorker does this in its parent, so that every forked work horse
    inherits configured mappers and compiled SQL instead of redoing that work for each job.
    Nothing is committed, published or counted."""
    name = f"~warm-up-{uuid.uuid4().hex[:8]}"
    try:
        user = User(username=name, email=f"{name}@localhost", token_salt="x")
        db.session.add(user)
        db.session.flush()
        task = Task(id=str(uuid.uuid4()), name=name, user_id=user.id, progress=0,
                    status=TaskStatus.QUEUED, active_name=name, created_at=utcnow())
        db.session.add(task)
        db.session.flush()
        db.session.expunge(task)  # so that loading it runs start's SELECT
        task = db.session.get(Task, task.id)
        _mark_running(task)
        db.session.flush()
        db.session.expire(task)  # as the commit leaves it for finish
        task = db.session.get(Task, task.id)
        _mark_ended(task, TaskStatus.FINISHED, None, "warm-up")
        db.session.flush()
        if _update_returns():  # and the statements of their common case, both finishes
            for finish_with_message in (True, False):
                db.session.execute(sa.update(_TASK_TABLE).where(_TASK_TABLE.c.id == task.id)
                                   .values(complete=False, status=TaskStatus.QUEUED))
                params = {"task_id": task.id, "now": utcnow()}
                Task(**db.session.execute(_start_statement(), params).one()._asdict())
                if finish_with_message:
                    params["message"] = "warm-up"
                db.session.execute(_finish_statement(finish_with_message), params).one()
    finally:
        db.session.rollback()  # and the events queued for its commit (app/events/)
        db.session.remove()


def dismiss(task: Task) -> None:
    """The user closed the task's alert."""
    mark_seen(task.user_id, [(task.name, task.created_at)])


def mark_seen(user_id: int, shown: list[tuple[str, datetime]]) -> None:
    """The user has seen how these tasks ended (their alerts were shown, or closed), given
    as (name, created_at): their alerts are not shown again, nor those of older tasks of the
    same kind that ended unseen (out of date). A newer task is never hidden. Commits."""
    newest: dict[str, datetime] = {}
    for name, created_at in shown:
        newest[name] = max(created_at, newest.get(name, created_at))
    for name, created_at in newest.items():
        db.session.execute(
            sa.update(Task).where(Task.user_id == user_id, Task.name == name,
                                  Task.complete.is_(True), Task.dismissed.is_(False),
                                  Task.created_at <= created_at)
            .values(dismissed=True)
            .execution_options(synchronize_session=False, changes_owner=user_id))
    db.session.commit()


@contextmanager
def _app_context():
    if has_app_context():
        yield
        return
    with get_worker_app().app_context():
        yield
