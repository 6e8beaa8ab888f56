"""The worker classes that `make run`, the Procfiles and the deployment units use (the worker
process's own app is made in app/jobs/bootstrap.py). AppWorker, RQ's forking worker, runs
every queue, the long jobs included:

    rq worker -w app.jobs.worker.AppWorker --connection-class app.redis_connection.Redis \
        --with-scheduler microblog-mail microblog-tasks microblog-bulk

and PooledWorker (app/jobs/pool.py) runs the short ones without a fork. (The connection class
reads `redis+sentinel://` URLs too: see app/redis_connection.py.)

Plain `rq worker microblog-tasks` (the tutorial's command) works too, but RQ's forking worker
then imports app.tasks, and so builds the Flask app, again in every job's child process (which
is why a worker's app leaves out what only the `flask` commands need). AppWorker loads the app
once in the parent, and runs the task lifecycle's statements once there (rolled back), so each
forked child inherits it ready-made.
"""

from __future__ import annotations

import os
import signal
import time

import sqlalchemy as sa
from rq.command import parse_payload
from rq.exceptions import InvalidJobOperation
from rq.executions import Execution
from rq.job import JobStatus
from rq.worker import Worker, WorkerStatus

from app import logs
from app.jobs import failures, lifecycle, priority, stop
from app.jobs.bootstrap import REDIS_LOST, get_worker_app
from app.jobs.process import die_with_parent
from app.redis_connection import ride_out_outages


class PromptExit:
    """A worker mixin: the worker exits as soon as it is done (a burst that emptied the queue,
    a warm shutdown), not up to a minute later.

    RQ's unsubscribe sends UNSUBSCRIBE, then stops its listening thread. With redis-py 8.2,
    stop() waits for that thread; the UNSUBSCRIBE reply may end the thread's read before the
    stop, and its next read then waits for a subscription for RQ's sleep_time, 60 s. Told to stop
    first, the thread ends on that reply."""

    def unsubscribe(self) -> None:
        if self.pubsub_thread is not None:
            self.pubsub_thread._running.clear()
        super().unsubscribe()


def heartbeat_ttl(job, working_time: float, interval: float, grace: int) -> int:
    """How long the heartbeat of a running job lasts: until the next one is due (every
    `interval`, or the job's timeout if sooner) plus `grace`. RQ's default adds 60 s; a
    shorter grace lets a dead worker's job be noticed sooner."""
    if job.timeout and job.timeout > 0:
        interval = min(job.timeout - working_time, interval)
    return max(int(interval), 1) + grace


class AppWorkerBase(PromptExit):
    """What both of our worker classes add to RQ's (AppWorker below, which forks a work horse
    per job, and PooledWorker in app/jobs/pool.py, which runs short jobs in its own long-lived
    process): the app preloaded, a configurable heartbeat grace, a Redis outage ridden out
    rather than the worker lost, and the hard stop of a cancelled task that did not stop
    itself within its grace (`kill_horse`: each class's own way of ending a job's process)."""

    job_process = "the process running it"  # for the log: what kill_horse kills

    def __init__(self, *args, **kwargs):
        import app.tasks  # noqa: F401  -- builds the app once, in this process

        super().__init__(*args, **kwargs)
        ride_out_outages(self.connection)  # heartbeats, save_meta, the scheduler's own copy
        self.heartbeat_grace = get_worker_app().config["TASK_HEARTBEAT_GRACE"]
        logs.configure_worker(get_worker_app().config["LOG_FORMAT"])
        self.warm_up()

    def warm_up(self) -> None:
        """Run the task lifecycle's statements once here, in a transaction rolled back, so
        that each job (in a forked work horse, or in this process) finds configured mappers
        and compiled SQL: that first-use work cost every job about 20 ms (docs/performance.md
        §2)."""
        with get_worker_app().app_context():
            try:
                lifecycle.warm_up()
            except sa.exc.SQLAlchemyError as exc:  # no tables yet, database away: only slower
                self.log.warning("Worker %s: lifecycle not warmed up: %s", self.name, exc)

    @property
    def dequeue_timeout(self) -> int:
        # RQ waits up to worker_ttl - 15 s (405 s) for a job before doing maintenance, so an
        # idle worker would clean up a dead worker's abandoned job only minutes later. Wake up
        # every maintenance interval instead.
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def stop_horse(self) -> None:
        """End the process running the job if it still runs: it must not run on beside a
        retry (AppWorker: its work horse; a pooled worker runs the job itself)."""

    # RQ's worker retries its wait for a job while Redis is unreachable, but quits when Redis
    # vanishes while it runs a job or its maintenance, and its scheduler process dies. A restart
    # of Redis (the data kept by the append-only file) would then stop every busy worker and
    # leave retries unscheduled. These keep the worker and its scheduler alive instead.

    def execute_job(self, job, queue):
        try:
            # The worker's own lines about the job (and the forked work horse's) carry its id.
            with logs.job_context(job):
                super().execute_job(job, queue)
        except REDIS_LOST as exc:
            self.log.warning("Worker %s: Redis lost while running job %s: %s",
                             self.name, job.id, exc)
            self.stop_horse()
            self.wait_for_redis()
            # The job has ended (its own Redis writes failed, or went unrecorded): do what
            # RQ does for a horse that died, so the job is retried now, not found abandoned.
            execution = self.execution_of(job)
            try:
                status = job.get_status()
            except InvalidJobOperation:  # Redis came back without it (no persistence):
                status = None            # app.jobs.reconcile reports the task as lost
            if status not in (None, JobStatus.FINISHED, JobStatus.FAILED):
                self.record_failure(job, exc, process_dead=True)
                # With its execution, so that RQ removes the execution record and the job's
                # entry in the started registry (the monitor did not get to).
                self.handle_job_failure(job, queue=queue, exc_string=f"Redis lost: {exc}",
                                        execution=execution)
            if execution is not None:
                # As RQ's monitor does when the horse ends: a stale entry would stay this
                # worker's "current job" (`rq info`, and a stop-job command for the next job
                # would be ignored as not running here).
                self.executions.pop(execution.id, None)
            self.set_state(WorkerStatus.IDLE)

    def execution_of(self, job) -> Execution | None:
        """This worker's execution record of `job`, if it made one before Redis went."""
        return next((e for e in self.executions.values() if e.job_id == job.id), None)

    # The hard stop of a cancelled task (app.jobs.lifecycle.cancel): asked at every heartbeat
    # of the job, and when the canceller's request arrives over this worker's channel.

    def handle_payload(self, message) -> None:
        payload = parse_payload(message)
        if payload.get("command") != stop.CANCEL_COMMAND:
            super().handle_payload(message)
            return
        try:
            self.stop_if_cancelled(payload.get("job_id"), payload.get("request"))
        except REDIS_LOST as exc:  # the next heartbeat asks again
            self.log.warning("Worker %s: cancel of job %s not checked: %s", self.name,
                             payload.get("job_id"), exc)

    def stop_if_cancelled(self, job_id: str | None, request: str | None = None) -> None:
        """Kill the process running the job if its task was cancelled longer ago than the
        grace its canceller gave (`request`: the canceller's copy, else the flag in Redis).
        RQ then files the job as stopped, and does not retry it: the row stays cancelled."""
        if job_id is None or job_id != self.get_current_job_id():
            return
        if stop.hard_stop_due(self.connection, job_id, request):
            self.log.warning("Worker %s: job %s was cancelled and its grace is over: killing "
                             "%s", self.name, job_id, self.job_process)
            self._stopped_job_id = job_id  # what RQ's stop-job command sets
            self.kill_horse()

    def heartbeat(self, *args, **kwargs) -> None:
        try:
            super().heartbeat(*args, **kwargs)
        except REDIS_LOST as exc:
            self.log.warning("Worker %s: heartbeat lost: %s", self.name, exc)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except REDIS_LOST as exc:
            self.log.warning("Worker %s: maintenance skipped, Redis lost: %s", self.name, exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_LOST:
            self.wait_for_redis()

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        self.revive_scheduler()  # after waiting out an outage, not only at maintenance
        return result

    def wait_for_redis(self) -> None:
        """Block until Redis answers again (backing off to 30 s between tries)."""
        delay = 1.0
        while True:
            try:
                self.connection.ping()
                break
            except REDIS_LOST:
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.revive_scheduler()

    def revive_scheduler(self) -> None:
        """Restart this worker's scheduler process if it died (as RQ's maintenance does every
        --maintenance-interval): it moves retries whose interval has passed back to the
        queue, and exits on the first Redis error."""
        process = self.scheduler._process if self.scheduler else None
        if process is not None and not process.is_alive():
            try:
                self.scheduler.acquire_locks(auto_start=True)
            except REDIS_LOST as exc:
                self.log.warning("Worker %s: scheduler not restarted: %s", self.name, exc)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return heartbeat_ttl(job, working_time, self.job_monitoring_interval,
                             self.heartbeat_grace)

    def record_failure(self, job, exc: BaseException, process_dead: bool = False) -> None:
        """Tell the task lifecycle that `job` failed with `exc` (RQ retries it or not)."""
        with get_worker_app().app_context():
            lifecycle.record_failure(job.id, exc, will_retry=job.should_retry,
                                     process_dead=process_dead)


class AppWorker(AppWorkerBase, Worker):
    """RQ's forking Worker with what AppWorkerBase adds, the task lifecycle told when a work
    horse is killed (RQ has no callback for that), and each job at WORKER_CPU_PRIORITY."""

    job_process = "its work horse"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu_priority = priority.check(get_worker_app().config["WORKER_CPU_PRIORITY"])
        priority.lower_own_session(self.cpu_priority)  # the horse lowers itself below

    def main_work_horse(self, job, queue):
        # The work horse runs in a process group of its own, so killing the worker (SIGKILL,
        # a lost container) would leave it running, unwatched: its job would be requeued as
        # abandoned while it still runs. Have the kernel kill it when its worker dies.
        die_with_parent()
        priority.apply(self.cpu_priority)  # the job only, not the worker's heartbeat
        super().main_work_horse(job, queue)

    def stop_horse(self) -> None:
        if self._horse_pid:
            try:
                if os.waitpid(self._horse_pid, os.WNOHANG)[0] == 0:
                    self.kill_horse()
                    os.waitpid(self._horse_pid, 0)
            except ChildProcessError:
                pass  # already reaped
            self._horse_pid = 0

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """RQ's, made safe when called from RQ's command thread (as stop_if_cancelled and
        RQ's stop-job are): a horse that has just ended (RQ would then kill this worker's
        own process group), or that was just forked, not yet in a group of its own."""
        pid = self._horse_pid
        if not pid:
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # the horse and what it started
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        self.log.info("Worker %s: killed horse pid %s", self.name, pid)

    def maintain_heartbeats(self, job, execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
            self.stop_if_cancelled(job.id)
        except REDIS_LOST as exc:  # the horse runs on; its next Redis call will tell
            self.log.warning("Worker %s: heartbeat lost: %s", self.name, exc)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        self.record_failure(job, failures.WorkHorseKilled(), process_dead=True)
