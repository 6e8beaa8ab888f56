"""/admin/jobs: the summary, per-type figures, workers and tasks; a task's page; and the
actions (retry, cancel, stop, delete job data, purge), each a confirmation page (GET) whose
form POSTs the action. The domain is app/jobs/operations.py and app/jobs/stats.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import _, format_decimal
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app import db
from app.admin import bp
from app.jobs import lifecycle, operations, stats
from app.models import Task, TaskStatus
from app.pagination import page_number

TASKS_PER_PAGE = 50
MAX_PURGE_DAYS = 36500


def _actor() -> str:
    return f"admin:{current_user.username}"


def _filters() -> operations.TaskFilter:
    """The task list's filters from the query string; an unknown status is a 400."""
    status = request.args.get("status") or None
    if status is not None and status not in (*TaskStatus.ACTIVE, *TaskStatus.TERMINAL):
        abort(400, description=_("Unknown status: %(status)s", status=status))
    return operations.TaskFilter(status=status, name=request.args.get("type") or None,
                                 username=request.args.get("user") or None)


@bp.route("/")
def index() -> ResponseReturnValue:
    return redirect(url_for("admin.jobs_page"))


@bp.route("/jobs")
def jobs_page() -> str:
    filters = _filters()
    tasks = db.paginate(filters.query(), page=page_number(),
                        per_page=TASKS_PER_PAGE, error_out=False)
    summary = workers = None
    try:
        summary, workers = stats.summary(), stats.workers()
    except redis.exceptions.RedisError:
        flash(_("Redis cannot be reached: queue and worker figures are missing."), "danger")
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "admin/jobs.html", title=_("Background jobs"), summary=summary, workers=workers,
        tasks=tasks, filters=filters, names=operations.task_names(),
        statuses=(*TaskStatus.ACTIVE, *TaskStatus.TERMINAL),
        prev_url=url_for("admin.jobs_page", page=tasks.prev_num, **args)
        if tasks.has_prev else None,
        next_url=url_for("admin.jobs_page", page=tasks.next_num, **args)
        if tasks.has_next else None)


def _task_or_404(task_id: str) -> Task:
    task = db.session.get(Task, task_id)
    if task is None:
        abort(404)
    return task


@bp.route("/jobs/<task_id>")
def task(task_id: str) -> str:
    detail = stats.task_detail(_task_or_404(task_id))
    superseded = _superseded_if_it_matters(detail.task)
    return render_template("admin/task.html", title=_("Task %(id)s", id=task_id[:8]),
                           detail=detail, actions=_actions_for(detail.task, superseded),
                           superseded=superseded)


# --------------------------------------------------------------------------- actions

@dataclass(frozen=True)
class Action:
    """One action on a task: its button, the confirmation question, when it applies, what
    runs (an app.jobs.operations function) and what the admin is told after."""

    label: object  # lazy strings (_l): translated when shown
    question: object
    applies: Callable[[Task], bool]
    run: Callable[[Task, str], object]
    done: object
    # Runs the task's work again: never offered for an old attempt at its export.
    current_attempt_only: bool = False


ACTIONS: dict[str, Action] = {
    "retry": Action(
        label=_l("Retry"), question=_l("Run this task again? Its user gets a new attempt."),
        applies=lambda t: t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED),
        run=operations.retry, done=_l("The task is queued again."), current_attempt_only=True),
    "cancel": Action(
        label=_l("Cancel"), question=_l("Cancel this queued task? It will not run."),
        applies=lambda t: t.status == TaskStatus.QUEUED,
        run=operations.cancel, done=_l("The task was cancelled.")),
    "stop": Action(
        label=_l("Stop"), question=_l("Stop this running task? Its work is abandoned."),
        applies=lambda t: t.status == TaskStatus.RUNNING,
        run=operations.cancel, done=_l("The task was stopped.")),
    "delete": Action(
        label=_l("Delete job data"),
        question=_l("Delete this task's job data (arguments, result, traceback) from "
                    "Redis? The task stays listed but can no longer be retried."),
        applies=lambda t: t.complete, run=operations.delete_job_data,
        done=_l("The job data was deleted.")),
}


def _actions_for(task: Task, superseded: lifecycle.Superseded | None) -> list[tuple[str, Action]]:
    return [(name, action) for name, action in ACTIONS.items() if action.applies(task)
            and not (superseded and action.current_attempt_only)]


def _superseded_if_it_matters(task: Task) -> lifecycle.Superseded | None:
    """lifecycle.superseded, asked only when an action it forbids would otherwise be offered.
    Redis down: not known here; the action itself refuses (app/jobs/operations.py)."""
    if any(a.current_attempt_only and a.applies(task) for a in ACTIONS.values()):
        try:
            return lifecycle.superseded(task)
        except redis.exceptions.RedisError:
            return None
    return None


@bp.route("/jobs/<task_id>/<action>", methods=["GET", "POST"])
def task_action(task_id: str, action: str) -> ResponseReturnValue:
    """GET: the confirmation page; POST (from it): the action, then back to the task."""
    chosen = ACTIONS.get(action)
    if chosen is None:
        abort(404)
    task = _task_or_404(task_id)
    back = url_for("admin.task", task_id=task.id)
    if request.method == "GET":
        if not chosen.applies(task):
            flash(_("This action does not apply to a %(status)s task.", status=task.status),
                  "warning")
            return redirect(back)
        if chosen.current_attempt_only and (why := _superseded_if_it_matters(task)):
            flash(_("Not done: %(why)s", why=str(why)), "warning")
            return redirect(back)
        return render_template("admin/confirm.html", title=str(chosen.label),
                               question=chosen.question, button=chosen.label, action=action,
                               detail=stats.task_detail(task), back=back)
    try:
        chosen.run(task, _actor())
    except operations.NotApplicable as exc:
        flash(_("Not done: %(why)s", why=str(exc)), "warning")
    except lifecycle.TaskAlreadyRunning:
        flash(_("Not done: this user already has a task of that type in progress."), "warning")
    except (lifecycle.JobsUnavailable, redis.exceptions.RedisError):
        flash(_("Not done: Redis cannot be reached. Please try again later."), "danger")
    else:
        flash(str(chosen.done), "success")
    return redirect(back)


def _purge_days() -> int | None:
    days = request.values.get("days", type=int)
    if days is None or not 1 <= days <= MAX_PURGE_DAYS:
        return None
    return days


@bp.route("/purge", methods=["GET", "POST"])
def purge() -> ResponseReturnValue:
    """GET ?days=N: how many tasks would go, and the form that purges them (POST)."""
    days = _purge_days()
    if days is None:
        flash(_("Enter a whole number of days, from 1 to %(max)s.",
                max=format_decimal(MAX_PURGE_DAYS)),
              "warning")
        return redirect(url_for("admin.jobs_page"))
    older_than = timedelta(days=days)
    if request.method == "GET":
        count = operations.purge_count(older_than)
        return render_template("admin/purge.html", title=_("Purge tasks"), days=days,
                               count=count)
    try:
        purged = operations.purge(older_than, _actor())
    except redis.exceptions.RedisError:
        flash(_("Not done: Redis cannot be reached. Please try again later."), "danger")
    else:
        flash(_("%(n)s task(s) purged.", n=format_decimal(purged)), "success")
    return redirect(url_for("admin.jobs_page"))
