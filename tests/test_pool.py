"""The pool of non-forking workers (app/jobs/pool.py) and the queues by priority, with real
processes: `python -m app.jobs.pool` as the Procfile starts it, a real Redis and SMTP server.
A job that crashes, hangs or leaks takes only its own worker process down; that process is
replaced, and its job retried or failed honestly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest
import rq
from rq.job import Job, JobStatus

from app.models import TaskStatus
from tests.conftest import (
    EVENT_TIMEOUT,
    MailCollector,
    make_user,
    process_output,
    serve_smtp,
    start_logged,
    stop_process,
    wait_for,
)
from tests.faults import mails_by_recipient, tasks_by_user
from tests.test_faults_redis import private_redis  # noqa: F401  -- a fixture

SHORT_QUEUES = ["microblog-mail", "microblog-tasks"]


def start_pool(*options: str, queues=SHORT_QUEUES) -> subprocess.Popen:
    """The pool as the Procfile starts it, with a 1-second heartbeat interval."""
    return start_logged([sys.executable, "-m", "app.jobs.pool", "--job-monitoring-interval", "1",
                         *options, *queues])


def pool_workers(app, pool: subprocess.Popen) -> dict[str, rq.Worker]:
    """The pool's registered workers by name: processes the pool forked."""
    workers = {}
    for worker in rq.Worker.all(connection=app.redis):
        try:
            with open(f"/proc/{worker.pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, TypeError):
            continue
        if parent == pool.pid:
            workers[worker.name] = worker
    return workers


def wait_for_workers(app, pool, count: int = 2) -> dict[str, rq.Worker]:
    def ready():
        assert pool.poll() is None, process_output(pool)
        workers = pool_workers(app, pool)
        return workers if len(workers) == count else None

    return wait_for(ready, message=f"{count} pool workers to register")


def worker_running(app, job_id: str) -> rq.Worker | None:
    return next((w for w in rq.Worker.all(connection=app.redis)
                 if w.get_current_job_id() == job_id), None)


def finished(job: Job) -> bool:
    return job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)


class HeldSmtp(MailCollector):
    """An SMTP server that holds the first message at RCPT, before it has it: a mail in
    flight whose sender can be killed, and which no retry can have delivered twice."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.reached.is_set():
            self.reached.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def held_smtp(config_overrides, monkeypatch):
    handler = HeldSmtp()
    controller = serve_smtp(handler, config_overrides, monkeypatch)
    yield handler
    handler.release.set()
    controller.stop()


def test_short_jobs_run_in_the_pools_long_lived_workers(app, smtp_server):
    """Mail, the tutorial's queue and a task's lifecycle, each without a fork: every job ran
    in one of the pool's two processes."""
    from app.email import send_email

    users = [make_user(f"user{i}") for i in range(3)]
    pool = start_pool("--num-workers", "2")
    try:
        wait_for_workers(app, pool)
        jobs = [app.task_queue.enqueue("tests.pool_jobs.pid") for _ in range(20)]
        for user in users:
            send_email("Hello", "admin@example.com", [user.email], "text", "<p>html</p>")
            user.launch_task("noop", "Doing nothing")
        wait_for(lambda: all(finished(job) for job in jobs)
                 and all(t.complete for t in tasks_by_user().values())
                 and len(smtp_server.handler_ref.messages) == 3, message="every job to end")
        workers = pool_workers(app, pool)
    finally:
        log = stop_process(pool)
    assert all(job.get_status() == JobStatus.FINISHED for job in jobs), log
    assert {job.return_value() for job in jobs} <= {w.pid for w in workers.values()}
    assert all(t.status == TaskStatus.FINISHED for t in tasks_by_user().values())
    assert mails_by_recipient(smtp_server.handler_ref.messages, "Hello") == {
        user.email: 1 for user in users}


def test_a_pool_worker_killed_mid_job_is_replaced_and_nothing_is_lost(app, held_smtp):
    """SIGKILL of the worker sending a mail (held by the server before it has the message)
    and of the one running a task: both replaced at once; the mail is retried and arrives
    once, every other mail once, and the task that cannot be retried fails saying why."""
    from app.email import send_email

    bob = make_user("bob")
    pool = start_pool("--num-workers", "2")
    try:
        before = wait_for_workers(app, pool)
        send_email("Held", "admin@example.com", ["ana@example.com"], "text", "<p>html</p>")
        assert held_smtp.reached.wait(EVENT_TIMEOUT), process_output(pool)
        [mail_job] = app.job_queues["microblog-mail"].started_job_registry.get_job_ids()
        task = bob.launch_task("countdown", "Counting down", 60)
        wait_for(lambda: tasks_by_user()["bob"].status == TaskStatus.RUNNING,
                 message="bob's countdown to run")
        for job_id in (mail_job, task.id):
            os.kill(worker_running(app, job_id).pid, signal.SIGKILL)
        others = [f"user{i}@example.com" for i in range(10)]
        for address in others:
            send_email("Other", "admin@example.com", [address], "text", "<p>html</p>")
        held_smtp.release.set()
        wait_for(lambda: len(held_smtp.messages) == 11 and tasks_by_user()["bob"].complete,
                 message="every mail, and the task to end")
        after = wait_for_workers(app, pool)
        survived = pool.poll() is None
    finally:
        log = stop_process(pool)
    assert survived, log
    assert not set(before) & set(after)  # both killed workers replaced, neither left registered
    assert mails_by_recipient(held_smtp.messages, "Held") == {"ana@example.com": 1}
    assert mails_by_recipient(held_smtp.messages, "Other") == {a: 1 for a in others}
    assert Job.fetch(mail_job, connection=app.redis).get_status() == JobStatus.FINISHED
    bob_task = tasks_by_user()["bob"]
    assert bob_task.status == TaskStatus.FAILED, log
    assert bob_task.error == "The worker running this task stopped unexpectedly."
    assert tasks_by_user().keys() == {"bob"}  # a mail needs no task


def test_a_job_past_its_timeout_is_stopped_and_the_pool_goes_on(app):
    """In Python, RQ's alarm stops the job at its timeout; in C, where no alarm reaches, the
    pool kills the process running it. Either way the job fails as timed out, its process is
    replaced, and the next jobs run."""
    pool = start_pool("--num-workers", "2")
    try:
        wait_for_workers(app, pool)
        asleep = app.task_queue.enqueue("tests.pool_jobs.nap", 600, job_timeout=1)
        in_c = app.task_queue.enqueue("tests.pool_jobs.spin_in_c", 10**13, job_timeout=1)
        wait_for(lambda: finished(asleep) and finished(in_c), message="both to be stopped")
        after = app.task_queue.enqueue("tests.pool_jobs.pid")
        wait_for(lambda: finished(after), message="the next job")
        workers = wait_for_workers(app, pool)
    finally:
        log = stop_process(pool)
    for job in (asleep, in_c):
        assert job.get_status() == JobStatus.FAILED, log
        assert "JobTimeoutException" in job.latest_result().exc_string
    assert after.get_status() == JobStatus.FINISHED
    assert after.return_value() in {w.pid for w in workers.values()}
    assert "killing worker" in log and ": timeout" in log  # the one in C, by the pool


def test_a_cancelled_task_in_the_pool_is_stopped_and_not_retried(app):
    """A cancel with no grace ends the worker process running the task: RQ files the job
    as stopped, the task stays cancelled, and the pool goes on with a fresh worker."""
    from app.jobs import lifecycle

    bob = make_user("bob")
    pool = start_pool("--num-workers", "1")
    try:
        before = wait_for_workers(app, pool, 1)
        task = bob.launch_task("countdown", "Counting down", 600)
        wait_for(lambda: tasks_by_user()["bob"].status == TaskStatus.RUNNING,
                 message="the countdown to run")
        lifecycle.cancel(tasks_by_user()["bob"], "Cancelled by you.", grace=0)
        job = Job.fetch(task.id, connection=app.redis)
        wait_for(lambda: job.get_status() == JobStatus.STOPPED, message="the job to stop")
        after = app.task_queue.enqueue("tests.pool_jobs.pid")
        wait_for(lambda: finished(after), message="the next job")
        workers = wait_for_workers(app, pool, 1)
    finally:
        log = stop_process(pool)
    assert tasks_by_user()["bob"].status == TaskStatus.CANCELLED, log
    assert after.get_status() == JobStatus.FINISHED
    assert set(workers) != set(before)


def test_pool_workers_are_recycled_after_n_jobs_and_past_their_memory(app):
    """--max-jobs 3: a fresh process every three jobs. --max-memory 150: a job that leaves its
    worker above 150 MB is its worker's last; past twice that mid-job, the pool kills it."""
    pool = start_pool("--num-workers", "1", "--max-jobs", "3", "--max-memory", "150")
    try:
        wait_for_workers(app, pool, 1)
        counted = [app.task_queue.enqueue("tests.pool_jobs.pid") for _ in range(9)]
        wait_for(lambda: all(finished(job) for job in counted), message="nine jobs")
        leaks = [app.task_queue.enqueue("tests.pool_jobs.hold", 200) for _ in range(2)]
        wait_for(lambda: all(finished(job) for job in leaks), message="the leaking jobs")
        huge = app.task_queue.enqueue("tests.pool_jobs.hold", 400)
        wait_for(lambda: finished(huge), message="the job past twice the limit")
        after = app.task_queue.enqueue("tests.pool_jobs.pid")
        wait_for(lambda: finished(after), message="the next job")
    finally:
        log = stop_process(pool)
    pids = [job.return_value() for job in counted]
    assert len(set(pids)) == 3 and all(pids.count(pid) == 3 for pid in pids), log
    assert all(job.get_status() == JobStatus.FINISHED for job in leaks)
    assert leaks[0].return_value() != leaks[1].return_value()  # replaced after the first
    assert huge.get_status() == JobStatus.FAILED and ": memory" in log
    assert after.get_status() == JobStatus.FINISHED


def test_mail_is_taken_before_exports_whatever_was_queued_first(app, smtp_server):
    """Each task type names its queue; every worker takes mail first, then the tutorial's
    queue, then the bulk one (exports, imports). One forking worker, three exports queued
    before a password-reset mail: the mail goes first."""
    from app.email import send_email
    from tests.conftest import run_worker_burst

    users = [make_user(f"user{i}", posts=["a post"]) for i in range(3)]
    for user in users:
        user.launch_task("export_posts", "Exporting posts...")
    example = app.task_queue.enqueue("tests.pool_jobs.pid")
    send_email("[Microblog] Reset Your Password", "admin@example.com", ["ana@example.com"],
               "text", "<p>html</p>")
    assert app.job_queues["microblog-bulk"].count == 3
    assert app.job_queues["microblog-mail"].count == 1 and app.task_queue.count == 1
    result = run_worker_burst()
    assert result.returncode == 0, result.stderr
    order = sorted((Job.fetch(job_id, connection=app.redis) for job_id in [
        *app.job_queues["microblog-mail"].finished_job_registry.get_job_ids(), example.id,
        *(t.id for t in tasks_by_user().values())]), key=lambda job: job.started_at)
    assert [job.origin for job in order] == [
        "microblog-mail", "microblog-tasks", *["microblog-bulk"] * 3]


@pytest.mark.once
def test_redis_restarted_mid_burst_loses_no_mail_and_sends_none_twice(
        private_redis, smtp_server, app):  # noqa: F811  -- the fixture imported above
    """A burst of mail in the pool; Redis (append-only file, as compose runs it) restarted
    in the middle: the pool rides it out, every mail arrives once."""
    from app.email import send_email

    addresses = [f"reader{i}@example.com" for i in range(200)]
    pool = start_pool("--num-workers", "2")
    try:
        wait_for_workers(app, pool)
        for address in addresses:
            send_email("Burst", "admin@example.com", [address], "text", "<p>html</p>")
        wait_for(lambda: len(smtp_server.handler_ref.messages) >= 20, interval=0.01,
                 message="the burst to be under way")
        private_redis.stop(signal.SIGTERM)
        private_redis.start()
        mail = app.job_queues["microblog-mail"]

        def every_mail_or_a_failure():
            failed = mail.failed_job_registry.get_job_ids()
            assert not failed, [Job.fetch(i, connection=app.redis).latest_result().exc_string
                                for i in failed]
            return len(smtp_server.handler_ref.messages) >= len(addresses)

        wait_for(every_mail_or_a_failure, timeout=240, message=(
            "every mail", lambda: (len(smtp_server.handler_ref.messages), mail.count,
                                   mail.started_job_registry.get_job_ids(),
                                   mail.scheduled_job_registry.get_job_ids())))
        wait_for(lambda: not app.job_queues["microblog-mail"].count, message="an empty queue")
        survived = pool.poll() is None
    finally:
        log = stop_process(pool)
        print(log, private_redis.log())
    assert survived, log
    assert mails_by_recipient(smtp_server.handler_ref.messages, "Burst") == {
        address: 1 for address in addresses}


def test_a_pool_killed_outright_leaves_no_job_behind(app, held_smtp):
    """SIGKILL of the pool itself mid-job: its workers die with it, the job's heartbeat
    lapses, and the next pool's maintenance retries it: the mail arrives once."""
    from app.email import send_email

    pool = start_pool("--num-workers", "1", "--maintenance-interval", "1")
    try:
        wait_for_workers(app, pool, 1)
        send_email("Held", "admin@example.com", ["ana@example.com"], "text", "<p>html</p>")
        assert held_smtp.reached.wait(EVENT_TIMEOUT), process_output(pool)
        workers = pool_workers(app, pool)
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait(timeout=EVENT_TIMEOUT)
        wait_for(lambda: all(not os.path.exists(f"/proc/{w.pid}") for w in workers.values()),
                 message="the pool's workers to die with it")
    finally:
        stop_process(pool)
    held_smtp.release.set()
    successor = start_pool("--num-workers", "1", "--maintenance-interval", "1")
    try:
        wait_for(lambda: len(held_smtp.messages) == 1, message="the mail, retried")
    finally:
        log = stop_process(successor)
    assert mails_by_recipient(held_smtp.messages, "Held") == {"ana@example.com": 1}, log


class SessionsSmtp(MailCollector):
    """Also notes the SMTP session (the connection) each message came over."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list = []

    async def handle_DATA(self, server, session, envelope):
        if not any(seen is session for seen in self.sessions):
            self.sessions.append(session)
        return await super().handle_DATA(server, session, envelope)


def test_a_pool_worker_keeps_one_smtp_connection_and_replaces_a_lost_one(
        app, config_overrides, monkeypatch):
    """A pool worker sends its mails over one SMTP connection, not one each. When the server
    goes away and comes back (its connections closed), the next mails arrive over a new
    connection, and the one caught by the lost connection is retried: each mail once."""
    from aiosmtpd.controller import Controller

    from app.email import send_email

    handler = SessionsSmtp()
    controller = serve_smtp(handler, config_overrides, monkeypatch)
    pool = start_pool("--num-workers", "1")
    try:
        wait_for_workers(app, pool, 1)
        first = [f"first{i}@example.com" for i in range(5)]
        for address in first:
            send_email("Kept", "admin@example.com", [address], "text", "<p>html</p>")
        wait_for(lambda: len(handler.messages) == 5, message="the first mails")
        over_one_connection = len(handler.sessions) == 1
        controller.stop()
        controller = Controller(handler, hostname="127.0.0.1", port=controller.port_number)
        controller.start()
        then = [f"then{i}@example.com" for i in range(3)]
        for address in then:
            send_email("Then", "admin@example.com", [address], "text", "<p>html</p>")
        wait_for(lambda: len(handler.messages) == 8, message="the mails after the restart")
    finally:
        log = stop_process(pool)
        controller.stop()
    assert over_one_connection, log
    assert len(handler.sessions) == 2, log
    assert mails_by_recipient(handler.messages, "Kept") == {a: 1 for a in first}
    assert mails_by_recipient(handler.messages, "Then") == {a: 1 for a in then}
