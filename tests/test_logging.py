"""Logs an operator can follow a job by (app/logs.py): every line of a job names its task id and
type, one line says how each attempt ended and how long it took, and LOG_FORMAT=json makes
every line a worker or the web app writes one JSON object, for log shippers."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

import pytest

from tests.conftest import config_for_tests, make_user, run_worker_burst, worker_env

# Log lines and their format, whatever the database: CI runs it once (SQLite).
pytestmark = pytest.mark.once

FIELDS = {"timestamp", "level", "logger", "message", "task_id", "task_type"}


def _launch_a_good_and_a_bad_task():
    good = make_user("ann").launch_task("noop", "Nothing")
    bad = make_user("bob").launch_task("countdown", "Counting", "x")  # TypeError in the task
    return good, bad


def test_a_json_worker_writes_nothing_but_json_and_one_end_line_per_job(app):
    good, bad = _launch_a_good_and_a_bad_task()
    result = run_worker_burst(env=worker_env(LOG_FORMAT="json", LOG_TO_STDOUT="1"))
    assert result.returncode == 0, result.stdout + result.stderr

    lines = (result.stdout + result.stderr).splitlines()
    entries = []
    for line in lines:  # every line, blank ones included: a shipper would choke on them
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not JSON: {line!r}\n{result.stdout}{result.stderr}")
    assert len(entries) > 5
    for entry in entries:
        assert FIELDS <= entry.keys(), entry
        assert entry["timestamp"].endswith("Z")
        datetime.fromisoformat(entry["timestamp"].removesuffix("Z"))
        assert "arguments" not in entry and "kwargs" not in entry  # a job's arguments stay out

    def end_lines(task):
        return [e for e in entries if e["task_id"] == task.id and "outcome" in e]
    [good_end] = end_lines(good)
    assert (good_end["task_type"], good_end["outcome"], good_end["level"]) == (
        "noop", "finished", "INFO")
    assert isinstance(good_end["duration"], float) and good_end["duration"] >= 0
    [bad_end] = end_lines(bad)
    assert (bad_end["task_type"], bad_end["outcome"]) == ("countdown", "failed")

    # RQ's own lines about a job carry it too: success, and the failure with its traceback.
    assert any(e["logger"] == "rq.worker" and "Job OK" in e["message"]
               and (e["task_id"], e["task_type"]) == (good.id, "noop") for e in entries)
    [failure] = [e for e in entries if e["level"] == "ERROR" and e["task_id"] == bad.id]
    assert failure["task_type"] == "countdown" and "TypeError" in failure["message"]
    # Lines outside any job say so.
    assert any(e["task_id"] is None and "Listening on" in e["message"] for e in entries)


def test_the_default_format_is_unchanged_and_a_jobs_lines_end_with_its_task(app):
    good, bad = _launch_a_good_and_a_bad_task()
    result = run_worker_burst(env=worker_env(LOG_TO_STDOUT="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not any(line.startswith("{") for line in lines)

    suffix = re.escape(f"[task {good.id} noop]")
    end = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO: Task " + re.escape(good.id)
                     + r" \(noop\) finished after \d+\.\d{3} s \[in \S+jobs/lifecycle\.py:\d+\] "
                     + suffix + "$")
    assert [line for line in lines if end.match(line)], result.stdout
    # RQ's lines keep RQ's format (time and message), with the job's task after them.
    assert [line for line in lines if re.match(
        r"^\d\d:\d\d:\d\d (Worker \w+: )?microblog-tasks: Job OK \(" + re.escape(good.id) + r"\) "
        + suffix
        + "$", line)], result.stdout
    assert any(f"Task {bad.id} (countdown) failed after" in line for line in lines)
    started = [line for line in lines if "started with PID" in line]
    assert started and "[task" not in started[0]


@pytest.fixture
def app_logger():
    """The "app" logger is global; the apps built here configure it (they are not TESTING)."""
    logger = logging.getLogger("app")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield logger
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def test_the_web_app_logs_json_with_the_exception(database, redis_server, app_logger, capsys):
    from app import create_app

    app = create_app(config_for_tests(TESTING=False, LOG_FORMAT="json", LOG_TO_STDOUT=True))

    @app.route("/boom")
    def boom():
        raise RuntimeError("boom")

    assert app.test_client().get("/boom").status_code == 500
    out, err = capsys.readouterr()
    entries = [json.loads(line) for line in out.splitlines()]
    [entry] = [e for e in entries if e["level"] == "ERROR"]
    assert entry["logger"] == "app" and entry["message"] == "Exception on /boom [GET]"
    assert "RuntimeError: boom" in entry["exc_info"]
    assert entry["task_id"] is None and entry["task_type"] is None
    assert "boom" not in err  # not a second time, in Flask's text format


def test_an_unknown_log_format_stops_the_app_with_a_clear_error(database, app_logger):
    from app import create_app

    with pytest.raises(ValueError, match="LOG_FORMAT must be 'text' or 'json', not 'xml'"):
        create_app(config_for_tests(TESTING=False, LOG_FORMAT="xml", LOG_TO_STDOUT=True))
