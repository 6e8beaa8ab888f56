"""Short jobs without a fork: a pool of long-lived worker processes, each running its jobs one
at a time in its own process (RQ's SimpleWorker), under a parent that watches them as RQ's
forking worker watches its work horse. The parent is RQ's WorkerPool (`rq worker-pool`) with
that watch added, so it has a command of its own:

    python -m app.jobs.pool --num-workers 2 microblog-mail microblog-tasks

A fork per job costs 20-35 ms of CPU (docs/performance.md §2); mail and other short jobs take
a few ms. What the fork gave each job, the pool keeps:

- *A time limit that really stops the job.* RQ's alarm raises in the job at its timeout, and
  the worker then replaces itself (the job may have been stopped anywhere: a connection half
  used). A job the alarm cannot reach (C code that holds the interpreter) is killed by the
  parent HARD_TIMEOUT_GRACE seconds later, and filed as timed out.
- *Stop and cancel.* A cancel past its grace (app/jobs/stop.py) ends the worker process:
  killed by itself on the canceller's request, or by the parent at its next look. RQ files
  the job as stopped.
- *Heartbeats.* The parent keeps the running job's heartbeat, as RQ's forking worker does for
  its horse, every --job-monitoring-interval. When the whole pool dies its workers die with
  it (die_with_parent), the heartbeats lapse, and any worker's maintenance retries the jobs:
  a job never runs on beside its retry.
- *Isolation.* A worker process that dies (a crash, SIGKILL, the kernel's OOM killer) is
  replaced at once, and its job retried or failed at once (as a killed work horse's), not
  when its heartbeat lapses. One whose memory passes twice --max-memory mid-job is killed so.
- *Recycling.* A worker exits after --max-jobs jobs, after a job that left it above
  --max-memory MB, or after a job that timed out; the parent forks a fresh one, the app
  already loaded. A worker keeps one SMTP connection across its mail jobs (app/email.py,
  KeptSmtpConnection) and closes it when it exits.

Long jobs (exports, imports) stay on AppWorker's work horses: see docs/performance.md §9.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing import get_context

from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus
from rq.worker_pool import WorkerData, WorkerPool

from app.email import close_kept_smtp_connection, keep_smtp_connection, release_claim
from app.jobs import lifecycle, stop
from app.jobs.bootstrap import REDIS_LOST, get_worker_app
from app.jobs.failures import WorkHorseKilled
from app.jobs.process import die_with_parent
from app.jobs.worker import AppWorkerBase, heartbeat_ttl
from app.redis_connection import Redis

log = logging.getLogger(__name__)

# Seconds past a job's timeout before the parent kills the process running it: RQ's alarm
# in that process should have stopped it at the timeout.
HARD_TIMEOUT_GRACE = 10
# Seconds between two looks of the parent at its workers (reaping, timeouts, cancels).
WATCH_INTERVAL = 0.5
# Seconds between two of a pool worker's own heartbeats (its key lives worker_ttl, minutes).
WORKER_BEAT_EVERY = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Limits:
    """What the command line sets for every worker of the pool."""

    max_jobs: int = 1000
    max_memory_mb: int = 256
    job_monitoring_interval: int = 10
    maintenance_interval: int = 30


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


class PooledWorker(AppWorkerBase, SimpleWorker):
    """RQ's SimpleWorker (each job in this process) with what AppWorkerBase adds. Runs only
    under JobPool, whose parent process keeps its jobs' heartbeats: started alone, its jobs
    would be taken for abandoned. Jobs run at the worker's own CPU priority: they are short,
    and someone waits for each (a mail)."""

    max_memory_mb = 0  # JobPool sets it
    job_process = "this worker process (the pool replaces it)"
    suspension_checked = -WORKER_BEAT_EVERY  # time.monotonic() of the last look
    opening = None  # the pipeline prepare_execution began, for prepare_job_execution
    state_written: str | None = None  # what set_state last wrote (None: unknown)

    def execute_job(self, job, queue):
        super().execute_job(job, queue)
        rss = rss_mb(os.getpid())
        if self.max_memory_mb and rss > self.max_memory_mb:
            self.log.info("Worker %s: %.0f MB after job %s (limit %d MB): replacing myself",
                          self.name, rss, job.id, self.max_memory_mb)
            self._stop_requested = True

    # RQ's bookkeeping around a job is a dozen round trips to Redis, worth more than a short
    # job's own work on a busy machine (every round trip waits for Redis to be scheduled).
    # These overrides cut what a long-lived process does not need: a beat or a look that is
    # a second old is as good as a new one, a state already written need not be written
    # again, and the writes that open a job go in one pipeline (docs/performance.md §9).

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ beats the worker's key three times per job (before and after the dequeue, after
        the job), three round trips each: most of a short job's Redis traffic, for a key that
        lasts minutes. Its plain beats are kept to one per WORKER_BEAT_EVERY seconds (a job's
        own heartbeat is the parent's: JobPool.keep_heartbeat)."""
        if timeout is None and self.last_heartbeat is not None and \
                (now() - self.last_heartbeat).total_seconds() < WORKER_BEAT_EVERY:
            return
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ asks whether workers are suspended (`rq suspend`) before every job, a round trip;
        here once per WORKER_BEAT_EVERY seconds, so a suspension stops this worker's next job
        at most that much later."""
        if time.monotonic() - self.suspension_checked < WORKER_BEAT_EVERY:
            return
        super().check_for_suspension(burst)
        self.suspension_checked = time.monotonic()

    def set_state(self, state: str, pipeline=None) -> None:
        """RQ writes `idle` twice between two jobs (after one, before waiting for the next),
        each a round trip of its own: a state this worker has written already is not written
        again (cleanup_execution below writes `idle` with the job's last pipeline)."""
        if pipeline is None and state == self.state_written:
            return
        super().set_state(state, pipeline)
        self.state_written = state

    def wait_for_redis(self) -> None:
        super().wait_for_redis()
        self.state_written = None  # a pipeline may have been lost with Redis: write it again

    def cleanup_execution(self, job: Job, pipeline, execution: Execution | None = None):
        """RQ's, in the pipeline that ends the job (success, failure or retry), and this
        worker idle in it once it runs no other."""
        super().cleanup_execution(job, pipeline, execution)
        if not self.executions:
            self.set_state(WorkerStatus.IDLE, pipeline=pipeline)

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's two pipelines before a job, its execution's record (and the worker busy), then
        the job and the worker's heartbeats with the job marked started, go in one: the first
        is only queued here, and sent with the second by prepare_job_execution. (A forking
        worker needs two: the second is its work horse's.)"""
        self.opening = self.connection.pipeline()
        execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=self.opening,
                                     worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=self.opening)
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False):
        """RQ's prepare_job_execution, in the pipeline prepare_execution began."""
        pipeline, self.opening = self.opening, None
        if pipeline is None:  # not opened by prepare_execution: RQ's own
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        with pipeline:
            ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(ttl, pipeline=pipeline)
            job.heartbeat(now(), ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if remove_from_intermediate_queue:
                queue = Queue(job.origin, connection=self.connection)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ beats the job's heartbeat once it has returned, a round trip of its own, so that
        its success or failure callback has time to run. A job that succeeded with no success
        callback is saved whole, that beat included, by RQ's next pipeline: it is not sent
        alone. (A running job's heartbeats are the parent's: JobPool.keep_heartbeat.)"""
        if job.get_status(refresh=False) == JobStatus.FAILED or job.success_callback:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = job.last_heartbeat = now()

    def handle_exception(self, job, *exc_info):
        if exc_info and isinstance(exc_info[1], JobTimeoutException):
            # Stopped wherever it was: start afresh rather than trust what it left behind.
            self._stop_requested = True
        super().handle_exception(job, *exc_info)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """The job runs in this process, so its end is this process's: file the job as RQ
        files a stopped one (stop_if_cancelled and RQ's stop-job set _stopped_job_id), then
        die. The pool replaces this worker."""
        job, execution = self.get_current_job(), self.execution
        if job is not None and self._stopped_job_id == job.id:
            job.ended_at = now()
            self.handle_job_failure(job, queue=Queue(job.origin, connection=self.connection),
                                    exc_string="Job stopped by user, worker process killed.",
                                    execution=execution)
        os.kill(os.getpid(), signal.SIGKILL)


def run_pooled_worker(name: str, queue_names: list[str], burst: bool, logging_level: str,
                      limits: Limits) -> None:
    """A pool worker's process, forked from the pool's (its app inherited, loaded)."""
    # Killed with the pool: its running job then lapses and is retried, never run twice.
    die_with_parent()
    connection = Redis.from_url(get_worker_app().config["REDIS_URL"])
    worker = PooledWorker(queue_names, name=name, connection=connection,
                          job_monitoring_interval=limits.job_monitoring_interval,
                          maintenance_interval=limits.maintenance_interval)
    worker.max_memory_mb = limits.max_memory_mb
    # Mail jobs share one SMTP connection per worker process instead of one each.
    keep_smtp_connection()
    try:
        worker.work(burst=burst, logging_level=logging_level, max_jobs=limits.max_jobs,
                    with_scheduler=True)
    finally:
        close_kept_smtp_connection()


@dataclass
class Watched:
    """The parent's view of one pool worker: RQ's record of it, when its running job last
    had a heartbeat, and why the parent killed it ((job id, "timeout" | "stopped" |
    "memory"), if it did)."""

    view: SimpleWorker
    last_beat: float = 0.0
    killed_for: tuple[str, str] | None = None
    jobs: dict[str, Job] = field(default_factory=dict)  # by execution id


class JobPool(WorkerPool):
    """RQ's WorkerPool of PooledWorkers, with the parent's watch (see the module's doc)."""

    def __init__(self, queues: list[str], connection, num_workers: int, limits: Limits):
        import app.tasks  # noqa: F401  -- the app, loaded once here for every worker forked

        super().__init__(queues, connection=connection, num_workers=num_workers,
                         worker_class=PooledWorker)
        self.limits = limits
        self.grace = get_worker_app().config["TASK_HEARTBEAT_GRACE"]
        self.watched: dict[str, Watched] = {}
        self.unsettled: list[WorkerData] = []

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0,
                           logging_level: str = "INFO"):
        return get_context("fork").Process(
            target=run_pooled_worker, name=f"PooledWorker {name}",
            args=(name, self._queue_names, burst, logging_level, self.limits))

    def start(self, burst: bool = False, logging_level: str = "INFO") -> None:
        """RQ's loop, with the watch, and a worker that recycled itself replaced even in
        burst mode while its queues still hold jobs."""
        logging.basicConfig(level=logging_level, format="%(asctime)s %(message)s")
        self._burst = burst
        self.status = self.Status.STARTED
        log.info("Pool %s: %d workers on %s", os.getpid(), self.num_workers,
                 ", ".join(self._queue_names))
        self.start_workers(burst=burst, logging_level=logging_level)
        self._install_signal_handlers()
        while True:
            self.reap_workers()
            self.settle_dead_workers()
            for data in list(self.worker_dict.values()):
                self.watch(data)
            if self.status == self.Status.STOPPED:
                if not self.worker_dict and not self.unsettled:
                    break
            else:
                if not burst or self.jobs_waiting():
                    self.check_workers(respawn=True)
                elif not self.worker_dict and not self.unsettled:
                    break
            time.sleep(WATCH_INTERVAL)
        log.info("Pool %s: every worker stopped", os.getpid())

    def jobs_waiting(self) -> bool:
        try:
            return any(queue.count for queue in self.queues)
        except REDIS_LOST:
            return True

    def reap_workers(self) -> None:
        # is_alive() reaps without waiting (RQ's joins each for 0.1 s).
        for data in list(self.worker_dict.values()):
            if not data.process.is_alive():
                self.handle_dead_worker(data)

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        self.unsettled.append(worker_data)

    def watched_worker(self, name: str) -> Watched:
        if name not in self.watched:
            self.watched[name] = Watched(SimpleWorker(
                self.queues, name=name, connection=self.connection, prepare_for_work=False))
        return self.watched[name]

    def running(self, watched: Watched) -> tuple[Execution, Job] | None:
        """The execution a worker is running and its job (None: idle, or its job gone)."""
        executions = watched.view.get_current_executions(refresh=True)
        if not executions:
            watched.jobs.clear()
            return None
        execution = executions[0]
        job = watched.jobs.get(execution.id)
        if job is None:
            try:
                job = Job.fetch(execution.job_id, connection=self.connection)
            except NoSuchJobError:
                return None
            watched.jobs = {execution.id: job}
        return execution, job

    # ------------------------------------------------------------------ the watch

    def watch(self, data: WorkerData) -> None:
        """One look at a live worker: kill it if its job is past its time, cancelled past
        its grace, or its memory past twice the limit; else keep the job's heartbeat."""
        watched = self.watched_worker(data.name)
        try:
            running = self.running(watched)
            if running is None:
                return
            execution, job = running
            if job.started_at is None:
                return
            working = (now() - job.started_at).total_seconds()
            why = self.reason_to_kill(data, job, working)
            if why is not None:
                log.warning("Pool: killing worker %s (pid %s), running job %s: %s", data.name,
                            data.pid, job.id, why)
                watched.killed_for = (job.id, why)
                os.kill(data.pid, signal.SIGKILL)
                return
            if time.monotonic() - watched.last_beat >= self.limits.job_monitoring_interval:
                self.keep_heartbeat(watched, execution, job, working)
        except REDIS_LOST as exc:  # the next look tries again
            log.warning("Pool: Redis lost while watching worker %s: %s", data.name, exc)
        except ProcessLookupError:
            pass  # it has just ended: the next reap settles it

    def reason_to_kill(self, data: WorkerData, job: Job, working: float) -> str | None:
        if job.timeout and job.timeout > 0 and working > job.timeout + HARD_TIMEOUT_GRACE:
            return "timeout"
        if stop.hard_stop_due(self.connection, job.id):
            return "stopped"
        if self.limits.max_memory_mb and rss_mb(data.pid) > 2 * self.limits.max_memory_mb:
            return "memory"
        return None

    def keep_heartbeat(self, watched: Watched, execution: Execution, job: Job,
                       working: float) -> None:
        """What RQ's forking worker does for its horse (maintain_heartbeats)."""
        ttl = heartbeat_ttl(job, working, self.limits.job_monitoring_interval, self.grace)
        with self.connection.pipeline() as pipeline:
            watched.view.heartbeat(self.limits.job_monitoring_interval + 60, pipeline=pipeline)
            execution.heartbeat(job.started_job_registry, ttl, pipeline=pipeline)
            job.heartbeat(now(), ttl, pipeline=pipeline, xx=True)
            pipeline.execute()
        watched.last_beat = time.monotonic()

    # ------------------------------------------------------------------ a worker's death

    def settle_dead_workers(self) -> None:
        """Retry or fail the job of each worker that died (Redis lost: at a later look)."""
        for data in list(self.unsettled):
            try:
                self.settle(data)
            except REDIS_LOST as exc:
                log.warning("Pool: Redis lost settling worker %s: %s", data.name, exc)
                continue
            self.unsettled.remove(data)
            self.watched.pop(data.name, None)

    def settle(self, data: WorkerData) -> None:
        """What RQ's forking worker does when its horse dies mid-job, for the job a dead pool
        worker was running (if any), then the worker's registration removed."""
        watched = self.watched_worker(data.name)
        view = watched.view
        for execution in view.get_current_executions(refresh=True):
            try:
                job = Job.fetch(execution.job_id, connection=self.connection)
            except NoSuchJobError:
                continue
            if job.get_status(refresh=False) != JobStatus.STARTED:
                continue  # it ended before its worker did
            # Whoever takes the dead execution out of the started registry settles it. RQ's
            # abandoned-job cleanup (another worker's maintenance, once the heartbeat lapsed
            # while this parent waited for a CPU) may have retried it already: the job
            # STARTED now is then that retry, running elsewhere, and must be left alone.
            started = Queue(job.origin, connection=self.connection).started_job_registry
            if not self.connection.zrem(started.key, execution.composite_key):
                continue
            why = watched.killed_for[1] if watched.killed_for and \
                watched.killed_for[0] == job.id else None
            if why == "stopped" or stop.hard_stop_due(self.connection, job.id):
                view._stopped_job_id = job.id  # RQ files it as stopped, never retried
            exc = (JobTimeoutException(f"Task exceeded maximum timeout value ({job.timeout} "
                                       "seconds)") if why == "timeout"
                   else WorkHorseKilled(f"worker process {data.pid} ended: "
                                        f"{why or data.process.exitcode}"))
            log.warning("Pool: worker %s (pid %s) died running job %s: %s", data.name,
                        data.pid, job.id, exc)
            job.ended_at = now()
            with get_worker_app().app_context():
                release_claim(job.id)  # its unfinished mail, as for a killed work horse
                lifecycle.on_job_failure(job, self.connection, type(exc), exc, None)
            view.handle_job_failure(job, queue=Queue(job.origin, connection=self.connection),
                                    exc_string=f"{type(exc).__name__}: {exc}",
                                    execution=execution)
        view.register_death()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.jobs.pool", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queues", nargs="+", help="the queues, in the order jobs are taken")
    defaults = Limits()
    parser.add_argument("--num-workers", "-n", type=int, default=2,
                        help="worker processes (default 2)")
    parser.add_argument("--max-jobs", type=int, default=defaults.max_jobs,
                        help="jobs a worker runs before it is replaced")
    parser.add_argument("--max-memory", type=int, default=defaults.max_memory_mb,
                        help="MB of RSS past which a worker is replaced after its job "
                             "(killed mid-job past twice this)")
    parser.add_argument("--job-monitoring-interval", type=int,
                        default=defaults.job_monitoring_interval)
    parser.add_argument("--maintenance-interval", type=int,
                        default=defaults.maintenance_interval)
    parser.add_argument("--burst", "-b", action="store_true",
                        help="stop once the queues are empty")
    parser.add_argument("--logging-level", default="INFO")
    args = parser.parse_args(argv)
    if args.num_workers < 1 or args.max_jobs < 1 or args.max_memory < 0:
        parser.error("--num-workers and --max-jobs must be at least 1, --max-memory >= 0")
    limits = Limits(max_jobs=args.max_jobs, max_memory_mb=args.max_memory,
                    job_monitoring_interval=args.job_monitoring_interval,
                    maintenance_interval=args.maintenance_interval)
    connection = Redis.from_url(get_worker_app().config["REDIS_URL"])
    JobPool(args.queues, connection, args.num_workers, limits).start(
        burst=args.burst, logging_level=args.logging_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
