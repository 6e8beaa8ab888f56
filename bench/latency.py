"""Progress latency: the time from a worker's progress write to a client seeing it, through
the mechanism the page uses (app/static/js/microblog.js polls GET /notifications?since=...
and, while a task runs, waits 1 s after each response before the next poll).

A real worker (started as `make run` starts it) runs `write_progress` below as a tracked task
of a logged-in user: it writes progress through the app's own `jobs.set_progress` (job meta,
Task row, `task_progress` notification, one commit) at random intervals, each longer than
the poll interval so that no write is overwritten before a poll can see it. A client polls
gunicorn (as `make run` runs it) like the page, and latency = the time the client received
the notification - the notification's own timestamp (set by the worker as it wrote it; both
processes read the same clock). Two clients, one after the other:

  page:  polls as the page does (1 s after each response);
  floor: polls back to back (every 10 ms), the lowest latency this path can give.

    python -m bench latency [--writes 25] [--quick] [--database ...]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.parse
import uuid

from bench.harness import (
    Http,
    Services,
    create_user,
    emit,
    fmt,
    login,
    percentile,
    say,
    summary,
    table,
)

NAME = "latency"
PAGE_POLL_S = 1.0  # FAST in microblog.js
FLOOR_POLL_S = 0.01


def write_progress(user_id: int, gaps: list[float], tail: float) -> None:
    """The worker side (runs in an RQ work horse): progress 1, 2, ... after each gap, then
    `tail` seconds before finishing (the finish notification replaces the last progress)."""
    from app import jobs

    jobs.start()
    for percent, gap in enumerate(gaps, start=1):
        time.sleep(gap)
        jobs.set_progress(percent)
    time.sleep(tail)
    jobs.finish("Progress benchmark done.")


def launch(services: Services, user, gaps: list[float], tail: float) -> str:
    """What jobs.launch does (Task row committed, then the job enqueued under its id), for a
    function outside app/tasks.py."""
    from rq.job import Callback

    from app import db, jobs
    from app.models import Task, TaskStatus, utcnow

    task = Task(id=str(uuid.uuid4()), name="bench_progress", description="Progress benchmark",
                user_id=user.id, status=TaskStatus.QUEUED, active_name="bench_progress",
                progress=0, created_at=utcnow())
    db.session.add(task)
    db.session.commit()
    services.app.task_queue.enqueue(
        "bench.latency.write_progress", user.id, gaps, tail, job_id=task.id,
        description=task.description, on_failure=Callback(jobs.on_job_failure),
        meta={"progress": 0}, job_timeout=int(60 + 2 * sum(gaps)))
    return task.id


def poll(port: int, cookie: str, task_id: str, writes: int, interval: float,
         timeout: float) -> list[float]:
    """Poll like the page until the task ends; latency (s) of each progress write seen."""
    client = Http(port, cookie)
    since = time.time()  # the page starts polling when it loads
    latencies: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    finished = False
    while not finished and time.monotonic() < deadline:
        status, _, body = client.request(
            "GET", "/notifications?" + urllib.parse.urlencode({"since": repr(since)}),
            headers={"Accept": "application/json"})
        received = time.time()
        if status != 200:
            raise RuntimeError(f"/notifications answered HTTP {status}")
        for n in json.loads(body):
            since = max(since, n["timestamp"])
            data = n["data"]
            if n["name"] != "task_progress" or data["task_id"] != task_id:
                continue
            if data["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"progress task {data['status']}: {data.get('error')}")
            if data["status"] == "finished":
                finished = True
            elif 1 <= data["progress"] <= writes and data["progress"] not in latencies:
                latencies[data["progress"]] = received - n["timestamp"]
        time.sleep(interval)
    client.close()
    if not finished:
        raise RuntimeError("the progress task did not finish in time")
    return [latencies[k] for k in sorted(latencies)]


def run(args) -> dict:
    rng = random.Random(5)
    modes = [("page", PAGE_POLL_S, args.writes, (1.1, 2.1)),
             ("floor", FLOOR_POLL_S, args.floor_writes, (0.05, 0.25))]
    with Services(NAME, database=args.database, proposed=args.proposed) as services:
        from app import db

        user = create_user("watcher")
        machine = services.machine()
        web = services.start_web()
        cookie = login(web.port, "watcher")
        worker = services.start_worker()
        results = {}
        for mode, interval, writes, (low, high) in modes:
            gaps = [round(rng.uniform(low, high), 3) for _ in range(writes)]
            task_id = launch(services, user, gaps, tail=2 * interval + 0.5)
            seen = poll(web.port, cookie, task_id, writes, interval, timeout=60 + 2 * sum(gaps))
            db.session.rollback()
            results[mode] = {
                "poll_interval_s": interval, "writes": writes, "seen": len(seen),
                "p50_ms": round(1000 * percentile(seen, 50), 1),
                "p95_ms": round(1000 * percentile(seen, 95), 1),
                "max_ms": round(1000 * max(seen), 1) if seen else None,
                "latency_ms": summary([1000 * s for s in seen], 1),
            }
            say(f"latency: {mode}: {len(seen)}/{writes} writes seen, p50 "
                f"{results[mode]['p50_ms']} ms, p95 {results[mode]['p95_ms']} ms")
        worker.stop()
    page, floor = results["page"], results["floor"]
    return {"machine": machine, "worker": services.worker_class_label, "modes": results,
            # what polling adds to the floor, against half the poll interval (its mean)
            "page_minus_floor_p50_ms": round(page["p50_ms"] - floor["p50_ms"], 1),
            "half_poll_interval_ms": 1000 * PAGE_POLL_S / 2}


def report(result: dict) -> str:
    rows = [[mode, f"{m['poll_interval_s'] * 1000:.0f} ms", f"{m['seen']}/{m['writes']}",
             f"{m['p50_ms']:.1f}", f"{m['p95_ms']:.1f}", f"{m['max_ms']:.1f}"]
            for mode, m in result["modes"].items()]
    return (table(["client", "poll every", "writes seen", "p50 ms", "p95 ms", "max ms"], rows)
            + f"\npage p50 - floor p50: {result['page_minus_floor_p50_ms']} ms (half the poll "
              f"interval: {result['half_poll_interval_ms']:.0f} ms); range of the page's "
              f"samples: {fmt(result['modes']['page']['latency_ms'], ' ms', 0)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=25,
                        help="progress writes seen by the page-like client (at most 99)")
    parser.add_argument("--floor-writes", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="a few writes (smoke test)")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true",
                        help="worker warmed up as docs/performance.md proposes (3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.writes, args.floor_writes = 3, 10
    args.writes, args.floor_writes = min(args.writes, 99), min(args.floor_writes, 99)
    result = run(args)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
