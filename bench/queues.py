"""The queues by priority and the pool of non-forking workers (app/jobs/pool.py), against the
forking workers, in one run:

1. throughput: N small jobs (the lifecycle's `noop` task, and bare `bench.noop.noop` jobs)
   queued first, then drained by the pool as the Procfile starts it, by AppWorker, and by
   the tutorial's plain forking `rq worker microblog-tasks`; jobs/s from RQ's own start and
   end times of the first and last job;
2. enqueue → start latency of bare jobs and lifecycle tasks launched at 100 a second into the
   idle pool, and of lifecycle tasks at SUSTAINED_RATE a second;
3. a password-reset mail requested while 20 exports of P posts are queued, with `make run`'s
   worker set (the worker and the pool), then with the worker alone;
4. M notification mails through the pool to a local SMTP server, against smtplib sending the
   same messages in one loop over one connection (the limit);
5. the pool workers' RSS over J short jobs (recycling bounds it);
6. an export of P posts in AppWorker's work horse and in a pool worker (where long jobs run).

    python -m bench queues [--quick] [--posts 100000] [--mails 10000] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import time
from pathlib import Path

from bench import harness
from bench.harness import (
    Services,
    create_users,
    emit,
    fmt,
    percentile,
    say,
    summary,
    table,
    wait_until,
)

NAME = "queues"
SHORT_QUEUES = ["microblog-mail", "microblog-tasks"]
# Lifecycle tasks a second that the pool keeps up with on a busy 2-core machine.
SUSTAINED_RATE = 20.0
DEFAULT_POOL = ["python", "-m", "app.jobs.pool", "--num-workers", "2",
                "--job-monitoring-interval", "10", "--maintenance-interval", "30", *SHORT_QUEUES]


def pool_command(queues: list[str] | None = None) -> list[str]:
    """The pool line of Procfile.dev (what `make run` starts), on other queues if given."""
    args = harness.procfile_command("pool", r"python -m app\.jobs\.pool .*microblog-tasks",
                                    DEFAULT_POOL)
    if queues is not None:
        args = [*[a for a in args if not a.startswith("microblog-")], *queues]
    return [sys.executable, *args[1:]]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


class PoolProcess(harness.Process):
    """`python -m app.jobs.pool` as Procfile.dev starts it."""

    def __init__(self, services: Services, queues: list[str] | None = None) -> None:
        log = services.tmp / f"pool-{len(services.processes)}.log"
        super().__init__(pool_command(queues), services.env(), log, "pool")
        services.processes.append(self)

    def workers(self, redis) -> list:
        from rq import Worker

        mine = set(children(self.pid))
        return [w for w in Worker.all(connection=redis) if w.pid in mine]

    def wait_ready(self, redis, count: int | None = None) -> None:
        def ready() -> bool:
            self.check_alive()
            workers = self.workers(redis)
            return len(workers) >= (count or 1)

        wait_until(ready, 120, "the pool's workers to register", interval=0.1)

    def workers_rss_mb(self) -> list[float]:
        from app.jobs.pool import rss_mb

        return [rss_mb(pid) for pid in children(self.pid)]


def _jobs(redis, ids: list[str]) -> list:
    from rq.job import Job

    return [job for job in Job.fetch_many(ids, connection=redis) if job is not None]


def _wait_done(redis, ids: list[str], timeout: float, worker) -> list:
    def done():
        worker.check_alive()
        jobs = _jobs(redis, ids)
        failed = [j for j in jobs if j.get_status(refresh=False) == "failed"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs failed:\n{worker.log_tail()}")
        return jobs if sum(j.get_status(refresh=False) == "finished" for j in jobs) == len(
            ids) else None

    try:
        return wait_until(done, timeout, f"{len(ids)} jobs to finish", interval=0.1)
    except TimeoutError as exc:
        states = [j.get_status(refresh=False) for j in _jobs(redis, ids)]
        queued = {q: redis.llen(f"rq:queue:{q}") for q in (*SHORT_QUEUES, "microblog-bulk")}
        clients = [(c["name"], c["cmd"], c["flags"]) for c in redis.client_list()]
        raise TimeoutError(f"{exc}; their states: {states}; queue lengths: {queued}; Redis's "
                           f"clients: {clients}; the worker's log ends:\n"
                           f"{worker.log_tail()}") from None


def drain_rate(jobs: list) -> float:
    """Jobs per second from the first job's start to the last one's end (RQ's times)."""
    first = min(job.started_at for job in jobs)
    last = max(job.ended_at for job in jobs)
    return len(jobs) / max((last - first).total_seconds(), 1e-6)


def throughput(services: Services, kind: str, worker_kind: str, count: int,
               users: list) -> float:
    """Queue `count` jobs, then start a worker of `worker_kind` and let it drain them."""
    if kind == "lifecycle":
        ids = [user.launch_task("noop", "Benchmark no-op").id for user in users[:count]]
    else:
        ids = [services.app.task_queue.enqueue("bench.noop.noop").id for _ in range(count)]
    if worker_kind == "pool":
        worker = PoolProcess(services)
    else:
        worker = services.start_worker(plain=worker_kind == "plain", wait=False)
    jobs = _wait_done(services.redis, ids, 120 + 5 * count, worker)
    worker.stop()
    wait_until_unblocked(services.redis)
    if kind == "lifecycle":
        _end_tasks(ids)
    return drain_rate(jobs)


def wait_until_unblocked(redis) -> None:
    """Until Redis has closed the stopped worker's connections. One that is still blocked in
    BLPOP when the next phase pushes its jobs (a dead process whose socket Redis has not yet
    read to its end) would be handed a job that no one then runs."""
    def unblocked() -> bool:
        return not any("b" in client["flags"] for client in redis.client_list())

    wait_until(unblocked, 30, "Redis to drop the stopped worker's connections", interval=0.02)


def _end_tasks(ids: list[str]) -> None:
    """Forget the finished noop tasks' rows, so the same users can launch again."""
    import sqlalchemy as sa

    from app import db
    from app.models import Notification, Task

    db.session.execute(sa.delete(Notification).where(Notification.name == "task_progress"))
    db.session.execute(sa.delete(Task).where(Task.id.in_(ids)))
    db.session.commit()


def latency(services: Services, pool: PoolProcess, users: list, rate: float,
            kind: str) -> dict:
    """Launch one lifecycle task (or enqueue one bare job) every 1/rate s into the idle pool;
    each job's RQ start minus its enqueue."""
    ids = []
    started = time.perf_counter()
    for i, user in enumerate(users):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        ids.append(user.launch_task("noop", "Benchmark no-op").id if kind == "lifecycle"
                   else services.app.task_queue.enqueue("bench.noop.noop").id)
    achieved = len(ids) / (time.perf_counter() - started)
    jobs = _wait_done(services.redis, ids, 120, pool)
    if kind == "lifecycle":
        _end_tasks(ids)
    ms = [1000 * (job.started_at - job.enqueued_at).total_seconds() for job in jobs]
    return {"rate": achieved, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms), "jobs": len(ms)}


def reset_mail_seconds(services: Services, user) -> float:
    """Ask for a password reset as the route does; seconds until the SMTP server has it."""
    from app.auth.email import send_password_reset_email

    before = len(services.smtp.messages)
    asked = time.perf_counter()
    send_password_reset_email(user)
    return services.smtp.wait_for(user.email, before, timeout=1800).received - asked


def mail_behind_exports(services: Services, posts: int, exporters: int) -> dict:
    from app import db
    from app.models import Task, TaskStatus, User

    ids = create_users("exporter", exporters)
    for uid in ids:
        harness.add_posts(uid, posts)
    harness.analyze()
    reader = harness.create_user("forgetful")
    worker, pool = services.start_worker(), PoolProcess(services)
    pool.wait_ready(services.redis, 2)
    tasks = [db.session.get(User, uid).launch_task("export_posts", "Exporting posts...")
             for uid in ids]
    task_ids = [t.id for t in tasks]

    def one_running() -> bool:
        db.session.rollback()
        return any(db.session.get(Task, i).status == TaskStatus.RUNNING for i in task_ids)

    wait_until(one_running, 120, "an export to run")
    with_pool = reset_mail_seconds(services, reader)
    pool.stop()
    without_pool = reset_mail_seconds(services, reader)
    waiting = services.app.job_queues["microblog-bulk"].count
    worker.stop()
    return {"exports": exporters, "posts": posts, "with_pool_s": with_pool,
            "worker_alone_s": without_pool, "exports_still_queued": waiting,
            "export_user_ids": ids}


def mails_against_smtplib(services: Services, count: int) -> dict:
    from app.email import build_message, send_email

    sender = "no-reply@bench.example"
    addresses = [f"reader{i}@bench.example" for i in range(count)]
    text = "You have a new message.\n\nRead it at http://127.0.0.1:5000/messages\n"
    html = "<p>You have a new message.</p><p><a href=\"http://127.0.0.1:5000/messages\">Read " \
           "it</a></p>"
    subject = "[Microblog] New message"
    # The limit: the same messages, built alike, in one loop over one connection.
    before = len(services.smtp.messages)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", services.smtp.port) as smtp:
        for address in addresses:
            message = build_message(subject, sender, [address], text, html).as_bytes()
            smtp.sendmail(sender, [address], message)
    services.smtp.wait_for_count(before + count, 600)
    limit = time.perf_counter() - started

    pool = PoolProcess(services)
    pool.wait_ready(services.redis, 2)
    before = len(services.smtp.messages)
    started = time.perf_counter()
    for address in addresses:
        send_email(subject, sender, [address], text, html)
    enqueued = time.perf_counter() - started
    arrived = services.smtp.wait_for_count(before + count, 1800) - before
    ours = time.perf_counter() - started
    pool.stop()
    if arrived != count:
        raise RuntimeError(f"{arrived} of {count} mails arrived")
    return {"mails": count, "limit_s": limit, "pool_s": ours, "enqueue_s": enqueued,
            "ratio": limit / ours}


def rss_over_jobs(services: Services, count: int) -> dict:
    """Queue `count` bare jobs in chunks while the pool runs; sample its workers' RSS."""
    from rq import Queue

    pool = PoolProcess(services)
    pool.wait_ready(services.redis, 2)
    queue = services.app.task_queue
    samples: list[tuple[int, float]] = []  # (jobs finished, largest worker RSS)
    pids: set[int] = set()
    chunk, queued = 1000, 0
    # Done: queued and no longer waiting or running. Not the finished registry's size: its
    # entries go after result_ttl (60 s), long before 100,000 jobs are through.
    started = queue.started_job_registry
    # A guard, not a figure: generous, as on a machine others keep busy jobs crawl.
    deadline = time.monotonic() + 600 + count / 10
    while True:
        done = queued - queue.count - started.get_job_count(cleanup=False)
        if queued < count and queued - done < 5 * chunk:
            size = min(chunk, count - queued)
            queue.enqueue_many([Queue.prepare_data("bench.noop.noop", result_ttl=60)
                                for _ in range(size)])
            queued += size
        rss = pool.workers_rss_mb()
        pids.update(children(pool.pid))
        if rss:
            samples.append((done, max(rss)))
        if done >= count:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} short jobs after the deadline")
        pool.check_alive()
        time.sleep(0.5)
    pool.stop()
    warm = [rss for done, rss in samples if done >= min(count // 10, 2000)] or [samples[-1][1]]
    return {"jobs": count, "rss_first_mb": warm[0], "rss_max_mb": max(warm),
            "rss_last_mb": warm[-1], "processes_seen": len(pids)}


def export_both_ways(services: Services, user_id: int, posts: int, repeat: int) -> dict:
    from app import db
    from app.models import Export, User

    figures: dict[str, list[float]] = {"fork": [], "pool": []}
    rss_after: list[float] = []
    user = db.session.get(User, user_id)
    for rep in range(repeat):
        for kind in (("fork", "pool") if rep % 2 == 0 else ("pool", "fork")):
            if kind == "pool":
                worker = PoolProcess(services, ["microblog-bulk"])
                worker.wait_ready(services.redis, 1)
            else:
                worker = services.start_worker()
            task = user.launch_task("export_posts", "Exporting posts...")
            [job] = _wait_done(services.redis, [task.id], 1800, worker)
            figures[kind].append((job.ended_at - job.started_at).total_seconds())
            if kind == "pool":
                rss_after.extend(worker.workers_rss_mb())
            worker.stop()
            db.session.query(Export).delete()
            db.session.commit()
    return {"posts": posts, "fork_s": summary(figures["fork"]),
            "pool_s": summary(figures["pool"]),
            "pool_over_fork": summary([p / f for p, f in zip(figures["pool"], figures["fork"],
                                                              strict=True)]),
            "pool_worker_rss_after_mb": max(rss_after) if rss_after else None}


def run(args) -> dict:
    # A user exports again at once (the cooldown would refuse it), and the pool's workers
    # are told apart from the forking worker's.
    os.environ["EXPORT_COOLDOWN"] = "0"
    with Services(NAME, database=args.database) as services:
        from app import db
        from app.models import User

        machine = services.machine()
        users = [db.session.get(User, uid) for uid in create_users("q", args.tasks)]
        rates: dict[str, list[float]] = {}
        plan = [("lifecycle", "pool", args.tasks), ("lifecycle", "app", args.tasks // 5),
                ("lifecycle", "plain", args.plain_tasks), ("bare", "pool", args.tasks),
                ("bare", "plain", args.plain_tasks)]
        for rep in range(args.repeat):
            for kind, worker_kind, count in plan:
                rate = throughput(services, kind, worker_kind, count, users)
                rates.setdefault(f"{kind}_{worker_kind}", []).append(rate)
                say(f"queues: run {rep + 1}: {kind} jobs through {worker_kind}: "
                    f"{rate:.1f} jobs/s")
        pool = PoolProcess(services)
        pool.wait_ready(services.redis, 2)
        # At 100/s, the rate: the dispatch of short jobs (bare), and lifecycle tasks,
        # which 2 workers on 2 shared cores drain more slowly than that (their queue grows);
        # and lifecycle tasks at a rate the pool keeps up with, for their own dispatch.
        lat = {label: latency(services, pool, users[:args.latency_tasks], rate, kind)
               for label, kind, rate in (("bare", "bare", 100.0),
                                         ("lifecycle", "lifecycle", 100.0),
                                         ("lifecycle_slow", "lifecycle", SUSTAINED_RATE))}
        pool.stop()
        for kind, figures in lat.items():
            say(f"queues: {kind} latency p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms")
        reset = mail_behind_exports(services, args.posts, 20)
        say(f"queues: reset mail {reset['with_pool_s']:.2f} s with the pool, "
            f"{reset['worker_alone_s']:.2f} s with the worker alone")
        mails = mails_against_smtplib(services, args.mails)
        say(f"queues: {args.mails} mails: ratio {mails['ratio']:.2f}")
        rss = rss_over_jobs(services, args.jobs)
        say(f"queues: RSS over {args.jobs} jobs: {rss['rss_first_mb']:.1f} -> "
            f"{rss['rss_max_mb']:.1f} MB")
        export = export_both_ways(services, reset.pop("export_user_ids")[0], args.posts,
                                  args.repeat)
    rate = {name: summary(values, 1) for name, values in rates.items()}
    ratios = {"lifecycle": summary([p / b for p, b in zip(
        rates["lifecycle_pool"], rates["lifecycle_plain"], strict=True)], 1),
        "bare": summary([p / b for p, b in zip(
            rates["bare_pool"], rates["bare_plain"], strict=True)], 1),
        "lifecycle_vs_appworker": summary([p / b for p, b in zip(
            rates["lifecycle_pool"], rates["lifecycle_app"], strict=True)], 1)}
    return {"machine": machine, "tasks": args.tasks, "plain_tasks": args.plain_tasks,
            "repeat": args.repeat, "jobs_per_s": rate, "pool_over_plain": ratios,
            "latency": lat, "reset_mail": reset, "mails": mails, "rss": rss, "export": export,
            "target": {"pool_over_plain_min": 10, "latency_p50_ms": 5, "latency_p99_ms": 50,
                       "reset_mail_s": 2, "mails_ratio_min": 0.5}}


def report(r: dict) -> str:
    rate, ratio = r["jobs_per_s"], r["pool_over_plain"]
    rows = [["lifecycle `noop` task", fmt(rate["lifecycle_pool"], digits=1),
             fmt(rate["lifecycle_app"], digits=1), fmt(rate["lifecycle_plain"], digits=1),
             fmt(ratio["lifecycle"], digits=1)],
            ["bare `bench.noop.noop` job", fmt(rate["bare_pool"], digits=1), "",
             fmt(rate["bare_plain"], digits=1), fmt(ratio["bare"], digits=1)]]
    lat, reset, mails, rss, export = (r["latency"], r["reset_mail"], r["mails"], r["rss"],
                                      r["export"])
    return "\n".join([
        table(["jobs/s, queued then drained", "pool (-n 2)", "AppWorker", "plain rq worker",
               "pool / plain"], rows),
        f"pool / AppWorker, lifecycle: {fmt(ratio['lifecycle_vs_appworker'], digits=1)}"
        f"   (target pool / plain >= 10; {r['tasks']} jobs, plain {r['plain_tasks']})",
        *(f"enqueue -> start, {kind.removesuffix('_slow')} jobs at {f['rate']:.0f}/s: "
          f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms "
          f"over {f['jobs']} (target p50 <= 5, p99 <= 50)" for kind, f in lat.items()),
        f"password-reset mail behind {reset['exports']} exports of {reset['posts']:,} posts: "
        f"{reset['with_pool_s']:.2f} s with make run's worker and pool (target <= 2 s), "
        f"{reset['worker_alone_s']:.2f} s with the worker alone "
        f"({reset['exports_still_queued']} exports still queued)",
        f"{mails['mails']:,} mails: smtplib loop {mails['limit_s']:.1f} s, the pool "
        f"{mails['pool_s']:.1f} s (enqueue {mails['enqueue_s']:.1f} s): "
        f"{mails['ratio']:.2f} x the limit (target >= 0.5)",
        f"pool workers' RSS over {rss['jobs']:,} short jobs: {rss['rss_first_mb']:.1f} MB "
        f"after the first tenth, {rss['rss_max_mb']:.1f} MB at most, "
        f"{rss['rss_last_mb']:.1f} MB at the end; {rss['processes_seen']} processes seen",
        f"export of {export['posts']:,} posts: work horse {fmt(export['fork_s'])} s, pool "
        f"worker {fmt(export['pool_s'])} s, pool / fork {fmt(export['pool_over_fork'])}; "
        f"pool worker RSS after it {export['pool_worker_rss_after_mb'] or 0:.0f} MB",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench queues", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="jobs drained by the pool")
    parser.add_argument("--plain-tasks", type=int, default=40,
                        help="jobs drained by plain rq worker (seconds each)")
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=100_000, help="short jobs for the RSS")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.plain_tasks, args.latency_tasks = 30, 3, 30
        args.posts, args.mails, args.jobs, args.repeat = 1000, 100, 1000, 1
    args.latency_tasks = min(args.latency_tasks, args.tasks)
    result = run(args)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
