"""WORKER_CPU_PRIORITY: the job's process (RQ's work horse) runs at the configured CPU
priority, the worker itself at normal priority, and a bad value stops the worker with a
message that names the setting. Real `rq worker` processes; each job reports the priority
it ran at (app.jobs.priority.current, run as the job, returns it as the job's result)."""

from __future__ import annotations

import sys

import pytest
from rq.job import JobStatus

from app.jobs import priority
from tests.conftest import (
    run_worker_burst,
    start_worker,
    stop_process,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="scheduling policies are Linux's")


def _env(**settings) -> dict:
    env = worker_env(**settings)
    if "WORKER_CPU_PRIORITY" not in settings:
        env.pop("WORKER_CPU_PRIORITY", None)  # the default
    return env


def _enqueue_priority_probe(app, pid: int = 0):
    return app.task_queue.enqueue("app.jobs.priority.current", pid)


def _result(job) -> str:
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.exc_info
    return job.return_value()


def test_at_idle_a_job_runs_at_idle_priority_and_its_worker_at_normal(app):
    worker = start_worker(env=_env(WORKER_CPU_PRIORITY="idle"))
    try:
        wait_for(lambda: priority.current(worker.pid) == "normal",
                 message="the worker to start")
        own = _enqueue_priority_probe(app)
        workers = _enqueue_priority_probe(app, worker.pid)  # read from inside the job
        wait_for(lambda: own.get_status(refresh=True) == JobStatus.FINISHED
                 and workers.get_status(refresh=True) == JobStatus.FINISHED,
                 message="the jobs to finish")
        # The worker, which heartbeats and watches the job, keeps its normal priority ...
        assert priority.current(worker.pid) == "normal"
        # ... in a session of its own (start_worker's), whose group it gives the lowest
        # weight against the other sessions, the web's among them (autogroups).
        if priority.session_nice(worker.pid) is not None:
            assert priority.session_nice(worker.pid) == priority.LOWEST_NICE
    finally:
        log = stop_process(worker)
    assert _result(own) == "idle", log
    assert _result(workers) == "normal", log


def test_a_worker_at_normal_priority_leaves_its_session_alone(app):
    worker = start_worker(env=_env(WORKER_CPU_PRIORITY="normal"))
    try:
        job = _enqueue_priority_probe(app)
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED,
                 message="the job to finish")
        assert priority.session_nice(worker.pid) in (None, 0)
    finally:
        stop_process(worker)
    assert _result(job) == "normal"


def test_a_worker_in_a_session_it_does_not_own_leaves_the_session_alone(app):
    """Here the test run's session: lowering it would slow everything else in it (as it
    would a terminal's shell)."""
    before = priority.session_nice()
    job = _enqueue_priority_probe(app)
    done = run_worker_burst(env=_env(WORKER_CPU_PRIORITY="idle"))
    assert done.returncode == 0, done.stderr
    assert _result(job) == "idle"  # the job itself still runs at the lowest priority
    assert priority.session_nice() == before


@pytest.mark.parametrize("setting, expected", [(None, "idle"), ("batch", "batch"),
                                               ("normal", "normal"), (" Idle ", "idle")])
def test_a_jobs_priority_follows_the_setting(app, setting, expected):
    job = _enqueue_priority_probe(app)
    settings = {} if setting is None else {"WORKER_CPU_PRIORITY": setting}  # None: the default
    done = run_worker_burst(env=_env(**settings))
    assert done.returncode == 0, done.stderr
    assert _result(job) == expected


def test_plain_rq_worker_leaves_the_job_at_the_workers_priority(app):
    """The tutorial's command does not know the setting: its jobs run as the worker does
    (docs/deployment.md shows how to start it at a low priority)."""
    job = _enqueue_priority_probe(app)
    done = run_worker_burst(env=_env(), args=["-u", app.config["REDIS_URL"]])
    assert done.returncode == 0, done.stderr
    assert _result(job) == "normal"


def test_a_bad_setting_stops_the_worker_with_a_message_naming_it(app):
    job = _enqueue_priority_probe(app)
    done = run_worker_burst(env=_env(WORKER_CPU_PRIORITY="fast"))
    assert done.returncode != 0
    assert "WORKER_CPU_PRIORITY must be one of idle, batch, normal; got 'fast'" in (
        done.stdout + done.stderr)
    assert job.get_status(refresh=True) == JobStatus.QUEUED  # nothing ran it


def test_check_names_the_setting_and_the_choices():
    assert priority.check("BATCH") == "batch"
    with pytest.raises(ValueError, match=r"WORKER_CPU_PRIORITY must be one of idle, batch, "
                                         r"normal; got ''"):
        priority.check("")


@pytest.mark.parametrize("text, nice", [("/autogroup-85 nice 0\n", 0),
                                        ("/autogroup-7 nice 19\n", 19),
                                        ("", None)])  # a process in the root group (CI's)
def test_the_autogroup_file_is_read_as_the_kernel_writes_it(text, nice):
    assert priority.autogroup_nice(text) == nice
