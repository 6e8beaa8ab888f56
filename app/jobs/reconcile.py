"""Tasks whose job RQ could not report on: the job vanished, failed without a callback, or its
worker died. Run when a user's page polls (`reconcile_user_tasks`) and by `flask tasks
reconcile`."""

from __future__ import annotations

from datetime import timedelta

import redis
import rq
import sqlalchemy as sa
from flask import current_app
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from app import db
from app.jobs.lifecycle import RETRY_NOTE, end
from app.models import Task, TaskStatus, User, utcnow

# How long a Task row may exist without its RQ job before it counts as lost
# (covers the instant between the row's commit and the enqueue).
ENQUEUE_GRACE = timedelta(seconds=60)


def reconcile(task: Task) -> Task:
    """Bring an unfinished Task row in line with RQ's view of its job, for the cases where
    RQ cannot call back: the job vanished, failed without a callback, or its worker died
    (the started registry entry expired; RQ's own cleanup then retries or fails it)."""
    if task.complete:
        return task
    try:
        job = Job.fetch(task.id, connection=current_app.redis)
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            # RQ runs the failure callback under a death penalty; the default one uses
            # SIGALRM, which only works in a main thread (not in a gunicorn request thread).
            registry = StartedJobRegistry(
                queue=rq.Queue(job.origin, connection=current_app.redis),
                death_penalty_class=TimerDeathPenalty)
            if registry.get_expired_job_ids():
                registry.cleanup()  # runs on_job_failure for abandoned jobs
                db.session.rollback()
                db.session.refresh(task)
                job.refresh()
                status = job.get_status(refresh=False)
    except NoSuchJobError:
        job, status = None, None
    except redis.exceptions.RedisError:
        return task  # cannot tell now; the next poll will
    if task.complete:
        return task
    if job is None:
        if utcnow() - task.created_at > ENQUEUE_GRACE:
            end(task, TaskStatus.FAILED, error="The task was lost by the job queue.")
    elif status == JobStatus.FAILED:
        # A failure RQ recorded without calling back: keep the last reason, minus any
        # promise of a retry that is not coming.
        reason = (task.error or "").removesuffix(RETRY_NOTE).strip() or "The task failed."
        end(task, TaskStatus.FAILED, error=reason)
    elif status in (JobStatus.STOPPED, JobStatus.CANCELED):
        end(task, TaskStatus.CANCELLED)
    elif status == JobStatus.FINISHED:
        end(task, TaskStatus.FINISHED, message=task.result_message)
    return task


def reconcile_user_tasks(user: User) -> list[Task]:
    return [reconcile(task) for task in user.get_tasks_in_progress()]


def reconcile_all() -> int:
    """Reconcile every unfinished task (the `flask tasks reconcile` command). Returns how
    many ended."""
    ended = 0
    for task in db.session.scalars(sa.select(Task).where(Task.complete.is_(False))).all():
        if reconcile(task).complete:
            ended += 1
    return ended
