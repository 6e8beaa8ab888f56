"""Job dispatch overhead: N trivial tasks through the app's own lifecycle
(`user.launch_task('noop', ...)`: Task row committed, job enqueued, worker runs
app.tasks.noop, which marks the task running then finished) against N bare
`queue.enqueue('bench.noop.noop')` drained by the same worker process, started as
`make run` starts it. Both are timed from the first enqueue until RQ has finished the
last job; they alternate, several times, in one run. Beside that wall-clock figure, the CPU
time the worker and its work horses spent per job (read from /proc, as bench/export.py
does): on a machine others share, it moves far less than the wall clock.

Each of the N tasks belongs to a different user: a user may have only one task of a name
queued or running.

`--worker plain` drains them with the tutorial's command, `rq worker -u $REDIS_URL
microblog-tasks`, whose work horse imports app.tasks (building the app) for every job of the
app: give it fewer tasks (`--tasks 20`).

    python -m bench dispatch [--tasks 1000] [--repeat 3] [--quick] [--database ...]
                             [--worker app|plain]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench import harness
from bench.export import job_cpu_seconds, process_cpu_seconds
from bench.harness import Services, create_users, emit, fmt, say, summary, table, wait_until

NAME = "dispatch"


def _drain(services: Services, worker, before: int, count: int, timeout: float) -> None:
    registry = services.app.task_queue.finished_job_registry
    failed = services.app.task_queue.failed_job_registry

    def done() -> bool:
        worker.check_alive()
        if failed.count:
            raise RuntimeError(f"{failed.count} jobs failed:\n{worker.log_tail()}")
        return registry.count >= before + count

    wait_until(done, timeout, f"{count} jobs to finish", interval=0.01)


def _function_ms(services: Services, ids: list[str]) -> float:
    """Median time inside the job function, from the horse's own started_at/ended_at."""
    from rq.job import Job

    jobs = Job.fetch_many(ids, connection=services.redis)
    return statistics.median((j.ended_at - j.started_at).total_seconds() * 1000
                             for j in jobs if j and j.started_at and j.ended_at)


def bare(services: Services, worker, count: int) -> dict:
    queue = services.app.task_queue
    before = queue.finished_job_registry.count
    cpu_before = process_cpu_seconds(worker.worker_pid)
    started = time.perf_counter()
    ids = [queue.enqueue("bench.noop.noop").id for _ in range(count)]
    enqueued = time.perf_counter() - started
    _drain(services, worker, before, count, timeout=60 + count)
    total = time.perf_counter() - started
    return {"enqueue_s": enqueued, "total_s": total, "function_ms": _function_ms(services, ids),
            "worker_cpu_ms": _worker_cpu_ms(services, worker, cpu_before, count)}


def _worker_cpu_ms(services: Services, worker, cpu_before: float, count: int) -> float:
    """CPU milliseconds per job of the worker and its (reaped) work horses."""
    return 1000 * job_cpu_seconds(services, worker, cpu_before) / count


def lifecycle(services: Services, worker, users: list) -> dict:
    import sqlalchemy as sa

    from app import db
    from app.models import Task, TaskStatus

    queue = services.app.task_queue
    before = queue.finished_job_registry.count
    cpu_before = process_cpu_seconds(worker.worker_pid)
    started = time.perf_counter()
    ids = [user.launch_task("noop", "Benchmark no-op").id for user in users]
    enqueued = time.perf_counter() - started
    # A guard, not a figure: plain `rq worker` takes seconds per job of the app on a busy machine.
    _drain(services, worker, before, len(users), timeout=60 + 10 * len(users))
    total = time.perf_counter() - started
    finished = db.session.scalar(sa.select(sa.func.count(Task.id)).where(
        Task.id.in_(ids), Task.status == TaskStatus.FINISHED))
    db.session.rollback()
    if finished != len(users):
        raise RuntimeError(f"only {finished} of {len(users)} tasks FINISHED")
    return {"enqueue_s": enqueued, "total_s": total, "function_ms": _function_ms(services, ids),
            "worker_cpu_ms": _worker_cpu_ms(services, worker, cpu_before, len(users))}


def run(count: int, repeat: int, database: str, proposed: bool, plain: bool = False) -> dict:
    with Services(NAME, database=database, proposed=proposed) as services:
        from app import db
        from app.models import User

        user_ids = create_users("dispatch", count)
        users = [db.session.get(User, uid) for uid in user_ids]
        machine = services.machine()
        worker = services.start_worker(plain=plain)
        # One unmeasured round of each, so both start with warm caches.
        bare(services, worker, min(count, 20))
        lifecycle(services, worker, users[:min(count, 20)])
        runs = []
        for rep in range(repeat):
            order = ("bare", "app") if rep % 2 == 0 else ("app", "bare")
            result = {}
            for kind in order:
                result[kind] = (bare(services, worker, count) if kind == "bare"
                                else lifecycle(services, worker, users))
            runs.append(result)
            say(f"dispatch: run {rep + 1}/{repeat}: bare {result['bare']['total_s']:.2f} s, "
                f"app lifecycle {result['app']['total_s']:.2f} s for {count} jobs")
        worker.stop()
    bare_jps = [count / r["bare"]["total_s"] for r in runs]
    app_jps = [count / r["app"]["total_s"] for r in runs]
    return {
        "machine": machine, "tasks": count, "repeat": repeat,
        "worker": harness.PLAIN_WORKER_LABEL if plain else services.worker_class_label,
        "bare_jobs_per_s": summary(bare_jps, 1),
        "app_jobs_per_s": summary(app_jps, 1),
        "ratio": summary([a / b for a, b in zip(app_jps, bare_jps, strict=True)]),
        "bare_enqueue_per_s": summary([count / r["bare"]["enqueue_s"] for r in runs], 1),
        "app_enqueue_per_s": summary([count / r["app"]["enqueue_s"] for r in runs], 1),
        # median time inside the job function (noop vs the lifecycle's start + finish)
        "bare_function_ms": summary([r["bare"]["function_ms"] for r in runs], 2),
        "app_function_ms": summary([r["app"]["function_ms"] for r in runs], 2),
        # CPU of the worker and its work horses per job, and bare / app of it
        "bare_worker_cpu_ms": summary([r["bare"]["worker_cpu_ms"] for r in runs], 2),
        "app_worker_cpu_ms": summary([r["app"]["worker_cpu_ms"] for r in runs], 2),
        "cpu_ratio": summary([r["bare"]["worker_cpu_ms"] / r["app"]["worker_cpu_ms"]
                              for r in runs]),
        "target": {"ratio_min": 0.8},
    }


def report(r: dict) -> str:
    rows = [["bare queue.enqueue (bench.noop.noop)", fmt(r["bare_jobs_per_s"], digits=1),
             fmt(r["bare_enqueue_per_s"], digits=0), fmt(r["bare_function_ms"]),
             fmt(r["bare_worker_cpu_ms"])],
            ["app lifecycle (user.launch_task('noop'))", fmt(r["app_jobs_per_s"], digits=1),
             fmt(r["app_enqueue_per_s"], digits=0), fmt(r["app_function_ms"]),
             fmt(r["app_worker_cpu_ms"])]]
    return (table([f"{r['tasks']} jobs", "jobs/s (enqueue→finished)", "enqueues/s",
                   "ms in job function", "worker CPU ms/job"], rows)
            + f"\nratio app/bare: {fmt(r['ratio'])}   (target ≥ 0.8; median (min–max) of "
              f"{r['repeat']} runs; worker: {r['worker']})"
            + f"\nworker CPU per job, bare/app: {fmt(r['cpu_ratio'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dispatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="50 tasks (10 on the plain worker), one run (smoke test)")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true",
                        help="the work horse's app uses the worker's Redis client, as "
                             "docs/performance.md proposes (9): bench/proposed.py")
    parser.add_argument("--worker", default="app", choices=["app", "plain"],
                        help="app = make run's AppWorker, plain = the tutorial's "
                             "`rq worker microblog-tasks`")
    args = parser.parse_args(argv)
    plain = args.worker == "plain"
    count, repeat = ((10 if plain else 50), 1) if args.quick else (args.tasks, args.repeat)
    result = run(count, repeat, args.database, args.proposed, plain=plain)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
