"""/api/tasks/<id>: one background task of the user's (an export, an import's steps, ...):
its state and progress, as its alert on the pages shows it. Polled with If-None-Match: the
ETag is made of the task's row, so an unchanged task costs one query (and, while it runs, a
look at its job in Redis, to notice a worker that died, as the page's poll does)."""

from __future__ import annotations

import json
import time

import marshmallow as ma
import sqlalchemy as sa
from flask import abort

from app import db
from app.api import bp
from app.api.auth import current_user_id
from app.api.conventions import Resource, Timestamp, etag, etag_doc
from app.jobs import failures, reconcile
from app.models import Notification, Task

blp = Resource("tasks", __name__, url_prefix="/tasks",
                description="Background tasks: state and progress.")


class ProgressSchema(ma.Schema):
    percent = ma.fields.Integer(required=True, metadata={"description": "0 to 100"})
    done = ma.fields.Integer(allow_none=True, metadata={"description": "units done so far"})
    total = ma.fields.Integer(allow_none=True)
    unit = ma.fields.String(allow_none=True, metadata={"description": 'what is counted ("posts")'})
    eta_seconds = ma.fields.Float(allow_none=True, metadata={
        "description": "about how long until it is done, at the rate so far"})


class TaskSchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True, metadata={"description": "export_posts, ..."})
    description = ma.fields.String(allow_none=True)
    status = ma.fields.String(required=True, metadata={
        "enum": ["queued", "running", "finished", "failed", "cancelled"]})
    progress = ma.fields.Nested(ProgressSchema, required=True)
    error = ma.fields.String(allow_none=True, metadata={
        "description": "why it failed or was cancelled, in the reader's language"})
    message = ma.fields.String(allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)


def task_etag_parts(task: Task | None) -> tuple:
    """What changes whenever a task's answer does (progress writes come with their counts)."""
    if task is None:
        return (None,)
    return (task.id, task.status, task.progress, task.error, task.result_message,
            task.started_at, task.finished_at)


def progress_of(task: Task | None) -> dict:
    """Percent, and the counts and estimate of the task's last progress report (kept in its
    notification, which the pages read too)."""
    if task is None:
        return {"percent": 0}
    percent = task.to_dict()["progress"]
    progress: dict = {"percent": percent}
    if task.status == "running":
        payload = db.session.scalar(sa.select(Notification.payload_json).where(
            Notification.user_id == task.user_id, Notification.name == "task_progress",
            Notification.topic == task.id))
        detail = json.loads(payload) if payload else {}
        progress.update({"done": detail.get("done"), "total": detail.get("total"),
                         "unit": detail.get("unit"), "eta_seconds": detail.get("eta")})
    return progress


# A running task's job is looked at in Redis (reconcile) at most this often per task and web
# process: a client polling every second would otherwise pay a Redis round trip on each
# poll, a third of its cost, to learn of a dead worker that RQ notices in 40 s anyway.
RECONCILE_EVERY = 10.0
_reconciled_at: dict[str, float] = {}


def reconciled(task: Task) -> Task:
    """The task, with a job whose worker died noticed (as the pages' poll does)."""
    if task.complete:
        return task
    now = time.monotonic()
    if now - _reconciled_at.get(task.id, -RECONCILE_EVERY) < RECONCILE_EVERY:
        return task
    if len(_reconciled_at) > 10_000:  # bounded: polls of tasks long gone are forgotten
        _reconciled_at.clear()
    _reconciled_at[task.id] = now
    return reconcile.reconcile(task)


def task_body(task: Task) -> dict:
    data = failures.task_for_reader(task.to_dict())
    return {"id": task.id, "name": task.name, "description": task.description,
            "status": task.status, "progress": progress_of(task), "error": data["error"],
            "message": task.result_message, "created_at": task.created_at,
            "started_at": task.started_at, "finished_at": task.finished_at}


@blp.route("/<id:task_id>")
@blp.response(200, TaskSchema)
@blp.doc(**etag_doc())
def get_task(task_id: str) -> dict:
    """One of your tasks

    Another user's task is a 404, like one that never existed."""
    task = db.session.get(Task, task_id) if len(task_id) <= 36 else None
    if task is None or task.user_id != current_user_id():
        abort(404)
    task = reconciled(task)
    etag(*task_etag_parts(task))
    return task_body(task)


bp.register_blueprint(blp)
