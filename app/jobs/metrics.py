"""Figures for Prometheus, the same whichever web process is scraped.

Nothing is counted in a process's memory: job counters and duration histograms live in Redis
hashes that every worker increments atomically when a job starts or ends (app/jobs/lifecycle.py
calls `job_started` / `job_ended`), and queue depth, latency, workers and active tasks are read from
Redis and the database at scrape time (MetricsCollector) by app/jobs/stats.py, which computes
the same figures for /admin/jobs and `flask tasks stats`. So any number of gunicorn processes
and workers on any number of hosts give one set of totals, and a restart loses nothing.

A worker only records: prometheus_client is imported where a scrape reads (the web), not by
the worker, which under plain `rq worker` imports this module again for every job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import redis

from app.models import TaskStatus

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily, Metric

    from app.jobs.stats import QueueFigures, WorkerFigures

log = logging.getLogger(__name__)

JOBS_KEY = "microblog:metrics:jobs"  # field "<type>|started" or "<type>|<outcome>": a count
DURATION_KEY = "microblog:metrics:job_duration"  # "<type>|<bucket>", "<type>|count", "|sum"
EXPORT_BYTES_KEY = "microblog:metrics:export_bytes"  # field: the export's format

# How a job attempt ended: finished, failed for good, failed and will be retried, cancelled.
OUTCOMES = ("finished", "failed", "retried", "cancelled")
# Upper bounds (seconds) of the duration histogram: from a no-op job to a big export.
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WORKER_STATES = ("started", "idle", "busy", "suspended", "dead")


# --------------------------------------------------------------------------- recording

# The lifecycle counts an attempt's start and end with the commit that records it: these add
# their commands to the pipeline app/events/ sends after that commit (a transaction, with
# the commit's live events; a failure there is logged, and never fails the job).

def job_started(pipeline: redis.client.Pipeline, task_type: str) -> None:
    pipeline.hincrby(JOBS_KEY, f"{task_type}|started", 1)


def job_ended(pipeline: redis.client.Pipeline, task_type: str, outcome: str,
              duration: float | None) -> None:
    """Count one attempt's end; its duration (seconds, when it ran) goes into the histogram.
    Count, sum and bucket change in the pipeline's transaction: a scrape never sees them
    disagree."""
    pipeline.hincrby(JOBS_KEY, f"{task_type}|{outcome}", 1)
    if duration is not None:
        bucket = next((str(b) for b in BUCKETS if duration <= b), "+Inf")
        pipeline.hincrby(DURATION_KEY, f"{task_type}|{bucket}", 1)
        pipeline.hincrby(DURATION_KEY, f"{task_type}|count", 1)
        pipeline.hincrbyfloat(DURATION_KEY, f"{task_type}|sum", max(duration, 0.0))


def export_written(connection: redis.Redis, export_format: str, size: int) -> None:
    _safely(lambda: connection.hincrby(EXPORT_BYTES_KEY, export_format, size))


def _safely(write) -> None:
    # A figure lost while Redis is away must not fail the job that it describes.
    try:
        write()
    except redis.exceptions.RedisError as exc:
        log.warning("Could not record a metric: %s", exc)


# --------------------------------------------------------------------------- reading

class MetricsCollector:
    """A prometheus_client collector that reads every figure when scraped.

    `connection` should be a Redis client of its own (app.jobs.stats.own_connection: RQ's
    Worker objects raise the socket timeout of the connection they are given)."""

    def __init__(self, connection: redis.Redis, queue_names: Iterable[str],
                 task_types: Iterable[str]) -> None:
        self.connection = connection
        self.queue_names = list(queue_names)
        self.task_types = list(task_types)

    def collect(self) -> Iterator[Metric]:
        # The figures operators also read on /admin/jobs and in `flask tasks stats`, computed
        # once, there. Imported here, where a scrape reads: a worker records only.
        from app.jobs import stats

        yield _tasks(stats.active_tasks(), self.task_types)
        try:
            families = [*_queues(stats.queues(self.connection, self.queue_names)),
                        _workers(stats.workers(self.connection)), *self._jobs(),
                        *self._exports()]
        except redis.exceptions.RedisError as exc:
            log.warning("Metrics without Redis: %s", exc)
            yield _gauge("microblog_redis_up", "1 when Redis answered this scrape.", [], [((), 0)])
            return
        yield _gauge("microblog_redis_up", "1 when Redis answered this scrape.", [], [((), 1)])
        yield from families

    def _jobs(self) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily

        counts = _hash(self.connection, JOBS_KEY)
        started = CounterMetricFamily(
            "microblog_jobs_started", "Job attempts started, by task type.", labels=["type"])
        ended = CounterMetricFamily(
            "microblog_jobs_ended", "Job attempts ended, by task type and outcome "
            "(finished, failed, retried, cancelled).", labels=["type", "outcome"])
        types = sorted(set(self.task_types) | {f.split("|")[0] for f in counts})
        for task_type in types:
            started.add_metric([task_type], counts.get(f"{task_type}|started", 0))
            for outcome in OUTCOMES:
                ended.add_metric([task_type, outcome], counts.get(f"{task_type}|{outcome}", 0))
        return [started, ended, self._durations(types)]

    def _durations(self, types: list[str]) -> Metric:
        from prometheus_client.core import HistogramMetricFamily

        fields = _hash(self.connection, DURATION_KEY)
        histogram = HistogramMetricFamily(
            "microblog_job_duration_seconds", "How long job attempts ran, by task type.",
            labels=["type"])
        for task_type in types:
            cumulative, buckets = 0.0, []
            for bound in (*map(str, BUCKETS), "+Inf"):
                cumulative += fields.get(f"{task_type}|{bound}", 0)
                buckets.append((bound, cumulative))
            histogram.add_metric([task_type], buckets,
                                 sum_value=fields.get(f"{task_type}|sum", 0.0))
        return histogram

    def _exports(self) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily

        written = CounterMetricFamily("microblog_export_bytes", "Bytes of export files "
                                      "written, by format.", labels=["format"])
        sizes = {"json": 0.0} | _hash(self.connection, EXPORT_BYTES_KEY)
        for export_format, size in sorted(sizes.items()):
            written.add_metric([export_format], size)
        return [written]


def _tasks(counts: dict[tuple[str, str], int], task_types: list[str]) -> Metric:
    for name in task_types:
        for status in TaskStatus.ACTIVE:
            counts.setdefault((name, status), 0)
    return _gauge("microblog_tasks", "Tasks (the users' jobs in the database) queued or "
                  "running.", ["type", "status"], sorted(counts.items()))


def _queues(figures: list[QueueFigures]) -> list[Metric]:
    return [
        _gauge("microblog_queue_depth", "Jobs waiting in the queue.", ["queue"],
               [((q.name,), q.depth) for q in figures]),
        # A gauge needs a number: "nobody waits" is 0 here, "-" on the admin page.
        _gauge("microblog_queue_latency_seconds", "Age of the oldest job waiting in the "
               "queue (0 when it is empty).", ["queue"],
               [((q.name,), q.latency_seconds or 0.0) for q in figures]),
        _gauge("microblog_queue_registry_jobs", "Jobs of the queue in RQ's started, "
               "scheduled (retries waiting) and failed registries.", ["queue", "registry"],
               [((q.name, registry), getattr(q, registry)) for q in figures
                for registry in ("started", "scheduled", "failed")]),
    ]


def _workers(figures: list[WorkerFigures]) -> Metric:
    states: dict[str, int] = dict.fromkeys(WORKER_STATES, 0)
    for worker in figures:
        states[worker.state] = states.get(worker.state, 0) + 1
    return _gauge("microblog_workers", "RQ workers registered (key not expired), by state; "
                  "dead: its process is gone or its job's heartbeat lapsed, until RQ "
                  "forgets it.", ["state"], [((s,), n) for s, n in sorted(states.items())])


def _hash(connection: redis.Redis, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in connection.hgetall(key).items()}


def _gauge(name: str, documentation: str, labels: list[str],
           samples: Iterable[tuple[tuple, float]]) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    gauge = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in samples:
        gauge.add_metric(list(label_values), value)
    return gauge

