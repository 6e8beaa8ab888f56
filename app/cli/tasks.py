"""`flask tasks ...`: what operators do to background tasks from a terminal or a script.

Every command prints aligned columns, or with --json one JSON document on stdout. Exit codes:
0 done, 1 no such task/user or the action does not apply (the reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import re
from datetime import timedelta

import click
import redis
from flask.cli import AppGroup

from app import db
from app.cli.output import actor, echo_json, echo_table, json_option, logs_to_stderr
from app.jobs import lifecycle, operations
from app.jobs import stats as job_stats
from app.jobs.reconcile import reconcile_all
from app.models import Task, TaskStatus, User
from app.template_filters import format_bytes, format_rate, format_seconds

STATUSES = [*TaskStatus.ACTIVE, *TaskStatus.TERMINAL]
DURATION = re.compile(r"\s*([0-9]+)\s*([dhm]?)\s*")
UNITS = {"d": "days", "": "days", "h": "hours", "m": "minutes"}


def parse_age(value: str) -> timedelta:
    """'30d', '12h', '90m' or a bare number of days."""
    match = DURATION.fullmatch(value)
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r}: give a positive age such as 30d, 12h or 90m")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def _task_or_fail(task_id: str) -> Task:
    task = operations.find_task(task_id)
    if task is None:
        raise click.ClickException(f"no task {task_id!r} (give its id, or 8+ characters of it)")
    return task


def _row(task: Task) -> dict:
    return {"id": task.id, "type": task.name, "user": task.user.username, "status": task.status,
            "attempts": task.attempts, "created_at": task.created_at,
            "started_at": task.started_at, "finished_at": task.finished_at,
            "reason": task.error}


class TasksGroup(AppGroup):
    """Redis down is one clear line and exit status 1, whichever command met it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except redis.exceptions.RedisError as exc:
            raise click.ClickException(f"Redis cannot be reached: {exc}") from exc


def register(app) -> None:
    @app.cli.group(cls=TasksGroup)
    def tasks():
        """Background task commands."""
        logs_to_stderr()

    @tasks.command()
    def reconcile():
        """End tasks whose job failed, vanished or lost its worker."""
        click.echo(f"{reconcile_all()} task(s) ended.")

    @tasks.command("list")
    @click.option("--status", type=click.Choice(STATUSES), help="Only tasks in this status.")
    @click.option("--type", "name", metavar="TYPE", help="Only tasks of this type.")
    @click.option("--user", "username", metavar="USERNAME", help="Only this user's tasks.")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
    @json_option
    def list_tasks(status, name, username, limit, as_json):
        """Tasks, newest first."""
        if username and db.session.scalar(
                db.select(User.id).where(User.username == username)) is None:
            raise click.ClickException(f"no user {username!r}")
        query = operations.TaskFilter(status=status, name=name, username=username).query()
        rows = [_row(task) for task in db.session.scalars(query.limit(limit))]
        if as_json:
            echo_json(rows)
            return
        echo_table(["ID", "TYPE", "USER", "STATUS", "ATTEMPTS", "QUEUED", "RUN TIME", "REASON"],
                   [[r["id"], r["type"], r["user"], r["status"], r["attempts"],
                     f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
                     format_seconds(job_stats.seconds_between(r["started_at"], r["finished_at"])),
                     r["reason"] or ""] for r in rows])

    @tasks.command()
    @click.argument("task_id")
    @json_option
    def show(task_id, as_json):
        """One task: timings, attempts, reason, and RQ's traceback of its last failure."""
        detail = job_stats.task_detail(_task_or_fail(task_id))
        if as_json:
            echo_json(detail)
            return
        fields = job_stats.as_json(detail)
        traceback = fields.pop("traceback")
        width = max(map(len, fields))
        for key, value in fields.items():
            click.echo(f"{key:<{width}}  {'-' if value is None else value}")
        if traceback:
            click.echo("\n" + traceback.rstrip())

    @tasks.command()
    @click.argument("task_id")
    @json_option
    def retry(task_id, as_json):
        """Run a failed or cancelled task again (same task, a new attempt)."""
        task = _task_or_fail(task_id)
        try:
            operations.retry(task, actor())
        except operations.NotApplicable as exc:
            raise click.ClickException(str(exc)) from exc
        except lifecycle.TaskAlreadyRunning as exc:
            raise click.ClickException(
                f"user {task.user.username} already has a {task.name} task in progress") from exc
        except lifecycle.JobsUnavailable as exc:
            raise click.ClickException(f"Redis cannot be reached: {exc}") from exc
        if as_json:
            echo_json({"id": task.id, "status": task.status, "attempts": task.attempts})
        else:
            click.echo(f"Task {task.id} is queued again.")

    @tasks.command()
    @click.argument("task_id")
    @json_option
    def cancel(task_id, as_json):
        """Cancel a queued task, or stop a running one."""
        task = _task_or_fail(task_id)
        try:
            outcome = operations.cancel(task, actor())
        except operations.NotApplicable as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            echo_json({"id": task.id, "status": task.status, "outcome": outcome})
        else:
            click.echo(f"Task {task.id} {outcome}.")

    @tasks.command()
    @click.option("--older-than", "age", required=True, metavar="AGE",
                  help="30d, 12h, 90m, or a number of days.")
    @click.option("--dry-run", is_flag=True, help="Only count what would go.")
    @json_option
    def purge(age, dry_run, as_json):
        """Delete ended tasks (rows and job data) that ended longer than AGE ago."""
        older_than = parse_age(age)
        if dry_run:
            count, key = operations.purge_count(older_than), "would_purge"
        else:
            count, key = operations.purge(older_than, actor()), "purged"
        if as_json:
            echo_json({key: count, "older_than_seconds": older_than.total_seconds()})
        else:
            click.echo(f"{count} task(s) {'would be ' if dry_run else ''}purged.")

    @tasks.command()
    @json_option
    def stats(as_json):
        """Queues, task types over the last 24 hours, and workers."""
        summary, workers = job_stats.summary(), job_stats.workers()
        if as_json:
            echo_json({"summary": summary, "types": summary.types, "queues": summary.queues,
                       "workers": workers, "latency_seconds": summary.latency_seconds,
                       "scheduled": summary.scheduled, "depth": summary.depth})
            return
        click.echo(f"queued {summary.queued}  running {summary.running}  retrying "
                   f"{summary.retrying}  scheduled {summary.scheduled}  depth {summary.depth}  "
                   f"latency {format_seconds(summary.latency_seconds)}")
        click.echo(f"last 24 h: finished {summary.finished}  failed {summary.failed}  "
                   f"cancelled {summary.cancelled}\n")
        echo_table(["TYPE", "QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED", "SUCCESS",
                    "P50", "P95"],
                   [[t.name, t.queued, t.running, t.finished, t.failed, t.cancelled,
                     format_rate(t.success_rate),
                     format_seconds(t.p50_seconds),
                     format_seconds(t.p95_seconds)] for t in summary.types])
        click.echo("")
        echo_table(["WORKER", "HOST", "PID", "STATE", "JOB", "HEARTBEAT", "DONE", "FAILED",
                    "RSS"],
                   [[w.name, w.hostname or "-", w.pid or "-", w.state,
                     (w.current_job_id or "-")[:8],
                     f"{w.last_heartbeat:%H:%M:%S}" if w.last_heartbeat else "-",
                     w.successful_jobs, w.failed_jobs, format_bytes(w.rss_bytes)]
                    for w in workers])
