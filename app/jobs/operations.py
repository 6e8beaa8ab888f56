"""What operators do to background tasks: cancel or stop, retry, delete a job's data, purge
old tasks; and find them. The admin view (app/admin/) and `flask tasks ...` (app/cli/tasks.py)
both call these, so a task changes the same way whoever clicks, and every action leaves one
log line naming who did it (an admin's username, or `cli:<login>`).

Like app/jobs/lifecycle.py, this module knows both the Task row and the RQ job; a task's status
still changes only through lifecycle.end (terminal) and lifecycle.reopen (back to the queue).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import BaseRegistry, CanceledJobRegistry, FinishedJobRegistry
from rq.results import Result

from app import db
from app.email import release_claim
from app.jobs import lifecycle, types
from app.models import Notification, Task, TaskStatus, User, utcnow

log = logging.getLogger(__name__)

CANCELLED_REASON = "Cancelled by an administrator."
STOPPED_REASON = "Stopped by an administrator."


class NotApplicable(Exception):
    """The action does not apply to the task as it is now; the message says why."""


# --------------------------------------------------------------------------- finding tasks

@dataclass(frozen=True)
class TaskFilter:
    """What the task lists filter on; None means any."""

    status: str | None = None
    name: str | None = None
    username: str | None = None

    def query(self) -> sa.Select:
        """Tasks matching the filter, newest first."""
        # Lists show each task's username: one query for all of them, not one per row.
        query = (sa.select(Task).options(so.selectinload(Task.user))
                 .order_by(Task.created_at.desc(), Task.id))
        if self.status:
            query = query.where(Task.status == self.status)
        if self.name:
            query = query.where(Task.name == self.name)
        if self.username:
            query = query.join(User, User.id == Task.user_id).where(
                User.username == self.username)
        return query


def find_task(task_id: str) -> Task | None:
    """The task with this id, or with an id that starts with it (8 characters at least, as
    the CLI's list prints them) when exactly one does."""
    task = db.session.get(Task, task_id)
    if task is not None or len(task_id) < 8:
        return task
    matches = db.session.scalars(
        sa.select(Task).where(Task.id.startswith(task_id, autoescape=True)).limit(2)).all()
    return matches[0] if len(matches) == 1 else None


def task_names() -> list[str]:
    """Every task type that has a row, and every one the app knows, for filter menus."""
    known = set(types.TASK_TYPES)
    known.update(db.session.scalars(sa.select(Task.name).distinct()))
    return sorted(known)


# --------------------------------------------------------------------------- actions

def _fetch_job(task: Task) -> Job | None:
    try:
        return Job.fetch(task.id, connection=current_app.redis)
    except NoSuchJobError:
        return None


def cancel(task: Task, actor: str) -> str:
    """Cancel a queued task (its job never starts) or stop a running one: lifecycle.cancel,
    the users' cancel, with no grace, so that a running attempt is killed now (a mail an
    export hands to the server in that instant still goes out). Returns "cancelled" or
    "stopped". Raises NotApplicable when the task has ended."""
    running = task.status == TaskStatus.RUNNING
    try:
        lifecycle.cancel(task, STOPPED_REASON if running else CANCELLED_REASON, grace=0)
    except lifecycle.TaskNotActive:
        raise NotApplicable(f"task {task.id} has already ended ({task.status}).") from None
    outcome = "stopped" if running else "cancelled"
    log.info("%s %s task %s (%s of user %s)", actor, outcome, task.id, task.name, task.user_id)
    return outcome


# The RQ registry an ended job sits in, by its status: where retry takes it out of.
def _registry_of(job: Job, status: JobStatus) -> BaseRegistry | None:
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        return job.failed_job_registry
    if status == JobStatus.CANCELED:
        return CanceledJobRegistry(job.origin, connection=job.connection)
    if status == JobStatus.FINISHED:  # a cancelled task whose job ran and did nothing
        return FinishedJobRegistry(job.origin, connection=job.connection)
    return None


def retry(task: Task, actor: str) -> Task:
    """Run a failed or cancelled task again as a new attempt of the same Task row and RQ job
    (same function, arguments and time limit; the task type's automatic retries afresh), so
    its user's alert, its attempt count and RQ's result history all continue.

    Raises NotApplicable when the task is not failed/cancelled, its job is no longer in
    Redis (its data expired after a day, or was deleted), or it is no longer the current
    attempt at its export (lifecycle.superseded: the user tried the export again since);
    lifecycle.TaskAlreadyRunning when the user has another task of that name in progress (the
    unique constraint decides); lifecycle.JobsUnavailable when Redis is down (the task is then
    failed again, saying so)."""
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise NotApplicable(f"only failed or cancelled tasks can be retried; task {task.id} "
                            f"is {task.status}.")
    job = _fetch_job(task)
    if job is None:
        raise NotApplicable(f"the job of task {task.id} is no longer in Redis (expired or "
                            "deleted), so it cannot be run again; the user can start a new one.")
    if (why := lifecycle.superseded(task, job)) is not None:
        raise NotApplicable(f"{why}; running the old attempt again would overwrite or delete "
                            "that export's file. Nothing was changed.")
    status = job.get_status(refresh=False)
    registry = _registry_of(job, status)
    if registry is None:
        raise NotApplicable(f"the job of task {task.id} is still {status} in RQ; "
                            "try again when it has stopped.")
    lifecycle.reopen(task)  # commits the row first, as launch does, then the job goes back
    if (policy := types.task_type(task.name).retry()) is not None:
        job.retries_left, job.retry_intervals = policy.max, policy.intervals
    job.meta["progress"] = 0
    try:
        release_claim(task.id)  # a stopped attempt's unfinished mail (see app.email)
        try:
            registry.requeue(job)  # saves the job, then enqueues it
        except InvalidJobOperation:  # its registry entry had already expired
            job.save()
            types.task_type(task.name).job_queue().enqueue_job(job)
    except redis.exceptions.RedisError as exc:
        lifecycle.end(task, TaskStatus.FAILED, error=lifecycle.JOBS_UNAVAILABLE)
        raise lifecycle.JobsUnavailable(str(exc)) from exc
    log.info("%s retried task %s (%s of user %s), attempt %d next", actor, task.id, task.name,
             task.user_id, task.attempts + 1)
    return task


def delete_job_data(task: Task, actor: str) -> bool:
    """Remove an ended task's job from Redis: its arguments, results and traceback. The row
    stays (and can no longer be retried). Returns False when Redis held nothing for it.
    Raises NotApplicable while the task is in progress."""
    if not task.complete:
        raise NotApplicable(f"task {task.id} is still {task.status}; cancel it first.")
    job = _fetch_job(task)
    if job is None:
        return False
    if job.get_status(refresh=False) == JobStatus.STARTED:
        raise NotApplicable(f"the job of task {task.id} is still stopping; try again shortly.")
    Result.delete_all(job)
    job.delete()
    log.info("%s deleted the job data of task %s (%s of user %s)", actor, task.id, task.name,
             task.user_id)
    return True


def purge_candidates(older_than: timedelta) -> sa.Select:
    """Ended tasks that finished more than `older_than` ago."""
    return sa.select(Task).where(Task.complete.is_(True),
                                 Task.finished_at < utcnow() - older_than)


def purge_count(older_than: timedelta) -> int:
    query = purge_candidates(older_than).subquery()
    return db.session.scalar(sa.select(sa.func.count()).select_from(query)) or 0


def purge(older_than: timedelta, actor: str, batch: int = 500) -> int:
    """Delete ended tasks that finished more than `older_than` ago: their rows, their
    progress notifications and their job data in Redis. Returns how many went."""
    purged = 0
    while True:
        tasks = db.session.scalars(purge_candidates(older_than).limit(batch)).all()
        if not tasks:
            break
        ids = [task.id for task in tasks]
        try:
            for task in tasks:
                job = _fetch_job(task)
                if job is not None:
                    Result.delete_all(job)
                    job.delete()
        except redis.exceptions.RedisError as exc:
            # Rows first would orphan job data nobody could name any more; stop here.
            db.session.rollback()
            log.warning("Purge stopped after %d task(s): Redis: %s", purged, exc)
            raise
        db.session.execute(sa.delete(Notification).where(
            Notification.name == "task_progress", Notification.topic.in_(ids)))
        db.session.execute(sa.delete(Task).where(Task.id.in_(ids)))
        db.session.commit()
        purged += len(ids)
    log.info("%s purged %d task(s) that ended more than %g day(s) ago", actor, purged,
             older_than.total_seconds() / 86400)
    return purged
