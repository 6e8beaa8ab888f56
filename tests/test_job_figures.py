"""The figures operators read about background jobs are one computation (app/jobs/stats.py):
/admin/jobs, `flask tasks stats --json` and /metrics report the same queue depth, the same
latency (the age of the same oldest waiting job) and the same workers, against a real Redis
with no worker running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC

import pytest
import rq
from rq.job import Job

from app import db
from app.redis_connection import redis_from_url
from tests.conftest import login, make_user
from tests.test_metrics import samples, scrape, value

QUEUE = "microblog-tasks"
# The page writes a latency under a minute as "0.12 s" or "12.3 s": rounded to 0.05 s at most.
ROUNDING = 0.06


@pytest.fixture
def admin(client):
    boss = make_user("boss")
    boss.admin = True
    db.session.commit()
    login(client, "boss")
    return client


def _page_seconds(text: str) -> float | None:
    if text == "-":
        return None
    match = re.fullmatch(r"([0-9.]+) s", text)
    assert match, f"a latency under a minute, in seconds: {text!r}"
    return float(match.group(1))


def from_admin_page(client) -> dict:
    html = client.get("/admin/jobs").get_data(as_text=True)

    def figure(key: str) -> str:
        block = html.split(f'data-figure="{key}"')[1]
        return re.search(r'figure-value">([^<]*)<', block).group(1)

    queues = html.split('id="queues"')[1].split("</table>")[0]
    row = queues.split(f'<td class="stack-wide">{QUEUE}</td>')[1].split("</tr>")[0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    workers = html.split('id="workers"')[1].split("</table>")[0]
    states = re.findall(r'data-label="State">([^<]*)</td>', workers)
    return {"depth": int(figure("depth")), "latency": _page_seconds(figure("latency")),
            "queue_depth": int(cells[0]), "queue_latency": _page_seconds(cells[1]),
            "workers": sorted(states)}


def from_cli(runner) -> dict:
    result = runner.invoke(args=["tasks", "stats", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    [queue] = [q for q in stats["queues"] if q["name"] == QUEUE]
    return {"depth": stats["depth"], "latency": stats["latency_seconds"],
            "queue_depth": queue["depth"], "queue_latency": queue["latency_seconds"],
            "workers": sorted(w["state"] for w in stats["workers"])}


def from_metrics(client) -> dict:
    figures = samples(scrape(client).get_data(as_text=True))
    workers = sorted(labels[0][1] for (name, labels), n in figures.items()
                     if name == "microblog_workers" for _ in range(int(n)))
    return {"queue_depth": value(figures, "microblog_queue_depth", queue=QUEUE),
            "queue_latency": value(figures, "microblog_queue_latency_seconds", queue=QUEUE),
            "workers": workers}


def _read_timed(read: Callable[[], dict]) -> tuple[float, dict, float]:
    before = time.time()
    figures = read()
    return before, figures, time.time()


def _enqueued_at(app, task_id: str) -> float:
    enqueued = Job.fetch(task_id, connection=app.redis).enqueued_at
    return (enqueued if enqueued.tzinfo else enqueued.replace(tzinfo=UTC)).timestamp()


def _assert_the_age_of(oldest: float, readings: dict[str, tuple[float, dict, float]]) -> None:
    """Each source's latency is the age of the job enqueued at `oldest` at the moment it was
    asked, give or take the page's rounding: between its request's start and end. Stricter
    than "within a second of each other" while requests are fast, and not fooled when a busy
    machine makes one of them (a CLI run) take longer than that."""
    for source, (before, figures, after) in readings.items():
        for key in ("latency", "queue_latency"):
            if key in figures:
                assert before - oldest - ROUNDING <= figures[key] <= after - oldest + ROUNDING, (
                    source, key, figures[key], before - oldest, after - oldest)


def test_with_jobs_waiting_the_page_the_cli_and_metrics_report_the_same_depth_and_latency(
        app, admin, runner):
    users = [make_user(f"user{i}") for i in range(3)]
    tasks = [user.launch_task("noop", "Nothing") for user in users]
    readings = {"admin": _read_timed(lambda: from_admin_page(admin)),
                "cli": _read_timed(lambda: from_cli(runner)),
                "metrics": _read_timed(lambda: from_metrics(admin))}

    for source, (_, figures, _) in readings.items():
        assert figures["queue_depth"] == 3, source
        assert figures.get("depth", 3) == 3, source
        assert figures["queue_latency"] is not None, source
    _assert_the_age_of(_enqueued_at(app, tasks[0].id), readings)


def test_with_nothing_waiting_they_agree_that_nobody_waits(app, admin, runner):
    page, cli, metrics = from_admin_page(admin), from_cli(runner), from_metrics(admin)
    assert page["depth"] == page["queue_depth"] == 0 and page["latency"] is None
    assert page["queue_latency"] is None  # "-"
    assert cli["depth"] == cli["queue_depth"] == 0 and cli["latency"] is None
    assert cli["queue_latency"] is None
    # A gauge is a number: no wait is 0 (documented in the metric's help).
    assert metrics["queue_depth"] == 0 and metrics["queue_latency"] == 0


def test_a_waiting_job_whose_data_is_gone_does_not_hide_the_wait_of_those_behind_it(
        app, admin, runner):
    """RQ skips a queued id whose job hash is gone (evicted under maxmemory, deleted by hand):
    the jobs behind it still wait, and every figure says how long."""
    users = [make_user(f"user{i}") for i in range(3)]
    tasks = [user.launch_task("noop", "Nothing") for user in users]
    oldest_left = _enqueued_at(app, tasks[1].id)
    app.redis.delete(Job.key_for(tasks[0].id))
    readings = {"admin": _read_timed(lambda: from_admin_page(admin)),
                "cli": _read_timed(lambda: from_cli(runner)),
                "metrics": _read_timed(lambda: from_metrics(admin))}

    for source, (_, figures, _) in readings.items():
        assert figures["queue_latency"] is not None, source
    _assert_the_age_of(oldest_left, readings)


def test_a_worker_whose_process_is_gone_is_dead_on_the_page_in_the_cli_and_in_metrics(
        app, admin, runner):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    connection = redis_from_url(app.config["REDIS_URL"])
    worker = rq.Worker([app.task_queue.name], connection=connection)
    worker.register_birth()
    try:
        connection.hset(worker.key, "pid", gone.pid)  # as if it had been killed -9
        page, cli, metrics = from_admin_page(admin), from_cli(runner), from_metrics(admin)
    finally:
        worker.register_death()
        connection.close()
    assert page["workers"] == cli["workers"] == metrics["workers"] == ["dead"]
