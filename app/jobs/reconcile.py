"""Tasks whose job RQ could not report on: the job vanished, failed without a callback, or its
worker died. Run when a user's page polls (`reconcile_user_tasks`) and by `flask tasks
reconcile`."""

from __future__ import annotations

import time
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
# How long a queued job must stay out of its queue, seen by two reconciles, before it goes
# back on it: a live worker that has just taken it marks it started within milliseconds.
DEQUEUED_GRACE = timedelta(seconds=30)


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
    elif status == JobStatus.QUEUED:
        requeue_if_taken_by_no_one(job)
    elif status in (JobStatus.STOPPED, JobStatus.CANCELED):
        end(task, TaskStatus.CANCELLED)
    elif status == JobStatus.FINISHED:
        end(task, TaskStatus.FINISHED, message=task.result_message)
    return task


def requeue_if_taken_by_no_one(job: Job) -> bool:
    """Put a queued job that its queue no longer holds back at the queue's front; True if it
    did. A worker waits for jobs in BLPOP: when its process dies, or its host drops off the
    network, Redis keeps serving that BLPOP until it notices the connection is gone (at once
    for a local process, minutes later for a lost host), and the job it hands over is read by
    no one: RQ never runs it and the task would stay queued for good.

    Looked at most once a grace while the job is in its queue (LPOS reads the list), and put
    back only when it is still queued and out of its queue a grace after it was first seen out:
    a live worker that takes it marks it started within milliseconds."""
    connection = current_app.redis
    queue = rq.Queue(job.origin, connection=connection)
    # Per enqueueing: a retry enqueues the same job again, and starts its watch afresh.
    enqueued = job.enqueued_at.isoformat() if job.enqueued_at else ""
    mark = f"microblog:queued-watch:{job.id}:{enqueued}"
    grace = int(DEQUEUED_GRACE.total_seconds())
    now = time.time()
    try:
        seen = connection.get(mark)
        if seen == b"in":
            return False
        if connection.lpos(queue.key, job.id) is not None:
            connection.set(mark, "in", ex=grace)
            return False
        if seen is None:
            connection.set(mark, now, ex=3 * grace)
            return False
        if now - float(seen) < grace:
            return False
        job.refresh()
        if job.get_status(refresh=False) != JobStatus.QUEUED:
            return False
        with connection.pipeline() as pipeline:
            queue.push_job_id(job.id, pipeline=pipeline, at_front=True)
            pipeline.delete(mark)
            pipeline.execute()
    except redis.exceptions.RedisError:
        return False  # the next reconcile looks again
    current_app.logger.warning("Job %s was queued but out of its queue %s for %d s (handed to "
                               "a worker that was gone): put back at its front", job.id,
                               queue.name, grace)
    return True


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
