"""Pages under load: gunicorn started as `make run` starts it (gunicorn.conf.py), a bounded
closed-loop load from a Python client (threads, one keep-alive connection each) on the home
page and on /notifications (the endpoint the page polls for task progress) of a logged-in
user with 100 posts in the feed: requests per second, p50 and p99 latency,

  idle:  with the workers idle, `--idle-repeat` (2) times in a row: the quiet baseline,
         reported with its spread over every idle measurement of the run;
  busy:  while two large exports run (two workers, each always running one: a small
         thread relaunches an export as soon as one finishes).

Each repetition measures idle then busy for each WORKER_CPU_PRIORITY of `--priorities` in
turn (idle, the default, and normal; --quick: idle), each with two workers of its own, so
every busy figure has idle ones beside it, with the web processes' CPU per page and the load
average at the end of each measurement. Then, per priority, the time two exports take with
the web idle and with the home page hammered the whole time by `--hammer-processes` client
processes of `--connections` each (what a job at low priority pays).

Then the phase "streams": 1,000 idle /events streams (50 users x 20 tabs, held by an asyncio
client on plain sockets), and the home page's load measured with none open, then with them
all open, in each repetition, with the web processes' CPU per page served beside the latency
(the machine's other tenants disturb it far less). Also the web processes' total RSS (and
PSS: gunicorn's forked workers share pages) with and without the streams, how the streams
spread over the workers, and the CPU time (utime + stime from /proc) the web processes spend
over `--cpu-seconds` (60; --quick: 3) with the streams open and idle, against the same time
with none.

    python -m bench pages [--duration 5] [--connections 4] [--repeat 3] [--idle-repeat 2]
                          [--priorities idle,normal[,batch]]
                          [--hammer-processes 2] [--export-seconds 60]
                          [--export-posts 300000] [--phases exports,streams]
                          [--stream-users 50] [--streams-per-user 20] [--cpu-seconds 60]
                          [--quick] [--database ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from bench.harness import (
    PASSWORD,
    ROOT,
    Http,
    LoadResult,
    Services,
    StreamClients,
    WebServer,
    add_posts,
    analyze,
    create_user,
    create_users,
    emit,
    fmt,
    login,
    process_group,
    raise_open_files,
    run_load,
    say,
    stream_caps,
    summary,
    table,
    wait_until,
    web_schedstat,
)

NAME = "pages"
# No import of app/ here: the app's config is read once, after Services sets the environment.
# A value the workers do not know stops them with a message naming it.
PATHS = {"home": "/", "notifications": "/notifications?since=0"}
ACCEPT = {"home": "text/html", "notifications": "application/json"}  # as the page sends


class ExportKeeper:
    """Keeps one export running for each of `user_ids` (relaunching when one ends) and
    records how much of the time both were running."""

    def __init__(self, app, user_ids: list[int]) -> None:
        self.app = app
        self.user_ids = user_ids
        self.launched = 0
        self.samples = 0
        self.all_running = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        # Measure only once every export is really running.
        wait_until(lambda: self._running() == len(self.user_ids), timeout, "exports to run")
        self.samples = self.all_running = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def busy_fraction(self) -> float:
        return self.all_running / self.samples if self.samples else 0.0

    def _running(self) -> int:
        import sqlalchemy as sa

        from app import db
        from app.models import Task, TaskStatus

        with self.app.app_context():
            count = db.session.scalar(sa.select(sa.func.count(Task.id)).where(
                Task.user_id.in_(self.user_ids), Task.status == TaskStatus.RUNNING))
            db.session.remove()
        return count

    def _run(self) -> None:
        from app import db
        from app.models import User

        with self.app.app_context():
            while not self._stop.is_set():
                for user_id in self.user_ids:
                    user = db.session.get(User, user_id)
                    if user.get_task_in_progress("export_posts") is None:
                        user.launch_task("export_posts", "Exporting posts...")
                        self.launched += 1
                db.session.remove()
                self.samples += 1
                self.all_running += self._running() == len(self.user_ids)
                self._stop.wait(0.1)


def phase_figures(results: dict[str, LoadResult]) -> dict:
    return {name: {"rps": r.rps, "p50_ms": r.percentile_ms(50), "p99_ms": r.percentile_ms(99),
                   "requests": len(r.latencies), "errors": r.errors}
            for name, r in results.items()}


def check_pages(port: int, cookie: str) -> None:
    """The load hits the real pages: the feed shows posts, /notifications answers JSON."""
    status, _, body = Http(port, cookie).request("GET", "/")
    if status != 200 or "Post " not in body.decode():
        raise RuntimeError(f"home page not as expected (HTTP {status})")
    status, _, body = Http(port, cookie).request("GET", PATHS["notifications"])
    if status != 200 or not isinstance(json.loads(body), list):
        raise RuntimeError(f"/notifications not as expected (HTTP {status})")


def run(args) -> dict:
    streams = args.stream_users * args.streams_per_user
    # Each stream is a socket in the benchmark and one in a web process (which inherits this).
    open_files = raise_open_files(2 * streams + 1024)
    with Services(NAME, database=args.database, proposed=args.proposed) as services:
        from app import db

        reader = create_user("reader", PASSWORD)
        friends = [create_user(f"friend{i}", password=None) for i in range(4)]
        for friend in friends:
            reader.follow(friend)
        db.session.commit()
        for user in (reader, *friends):  # 5 x 20 = 100 posts in the reader's feed
            add_posts(user.id, 20, start="2025-06-01 00:00:00")
        exporter_ids = []
        if "exports" in args.phases:
            exporters = [create_user(f"exporter{i}", password=None) for i in range(2)]
            for user in exporters:
                add_posts(user.id, args.export_posts)
            exporter_ids = [u.id for u in exporters]
        if "streams" in args.phases:
            create_users("watcher", args.stream_users, password=PASSWORD)
        analyze()
        db.session.rollback()
        machine = services.machine()

        web = services.start_web(**stream_caps(args.stream_users, args.streams_per_user))
        cookie = login(web.port, "reader")
        check_pages(web.port, cookie)
        run_load(web.port, "/", cookie, args.connections, min(args.duration, 2))  # warm up
        result = {"machine": machine, "connections": args.connections,
                  "duration_s": args.duration, "repeat": args.repeat,
                  "gunicorn": "gunicorn.conf.py (as make run)", "phases": args.phases}
        if "exports" in args.phases:
            result.update({
                "export_posts": args.export_posts, "worker": services.worker_class_label,
                "variants": exports_phase(services, web, cookie, exporter_ids, args),
                "targets": {"p99_busy_over_idle_max": 1.5,
                            "notifications_over_page_max": 1.0}})
        if "streams" in args.phases:
            result["streams"] = streams_phase(services, web, cookie, args)
            result["streams"]["open_files_limit"] = open_files
    return result


def exports_phase(services: Services, web: WebServer, cookie: str, exporter_ids: list[int],
                  args) -> dict:
    """Per repetition, for each worker CPU priority in turn (so that every priority meets
    the machine's other tenants alike): two workers at that priority, the pages idle
    (`--idle-repeat` times: a quiet baseline and its spread), then while two exports run.
    Then, per priority, how long two exports take with the web idle and hammered."""
    runs: dict[str, list[dict]] = {p: [] for p in args.priorities}
    for rep in range(args.repeat):
        for priority in args.priorities:
            workers = [services.start_worker(WORKER_CPU_PRIORITY=priority)
                       for _ in exporter_ids]
            idles = [measure_with_load(web, cookie, args) for _ in range(args.idle_repeat)]
            keeper = ExportKeeper(services.app, exporter_ids)
            keeper.start()
            try:
                busy = measure_with_load(web, cookie, args)
            finally:
                keeper.stop()
            busy["exports_launched"] = keeper.launched
            busy["both_exports_running"] = keeper.busy_fraction
            runs[priority].append({"idles": idles, "busy": busy})
            idle_p99 = {page: statistics.median(i[page]["p99_ms"] for i in idles)
                        for page in PATHS}
            say(f"pages: run {rep + 1}/{args.repeat}, workers {priority}: p99 idle (median of "
                f"{len(idles)}) / busy: home {idle_p99['home']:.1f} / "
                f"{busy['home']['p99_ms']:.1f} ms, notifications "
                f"{idle_p99['notifications']:.1f} / {busy['notifications']['p99_ms']:.1f} ms; "
                f"both exports running {100 * keeper.busy_fraction:.0f}% of the time; "
                f"load average {busy['loadavg']:.1f}")
            _end_exports(services, exporter_ids, workers)
    variants = {}
    for priority in args.priorities:
        workers = [services.start_worker(WORKER_CPU_PRIORITY=priority) for _ in exporter_ids]
        export_time = {"web_idle": _export_time(services, web, cookie, exporter_ids, args,
                                                hammer=False)}
        if export_time["web_idle"]["s"] is None:
            # Capped with its exports still running (a busy machine): a user has one export
            # at a time, so they end before the next timing starts its own.
            _end_exports(services, exporter_ids, workers)
            workers = [services.start_worker(WORKER_CPU_PRIORITY=priority)
                       for _ in exporter_ids]
        export_time["web_hammered"] = _export_time(services, web, cookie, exporter_ids, args,
                                                   hammer=True)
        say(f"pages: workers {priority}: two exports, web idle: {_said(export_time['web_idle'])}; "
            f"home page hammered: {_said(export_time['web_hammered'])}")
        _end_exports(services, exporter_ids, workers)
        variants[f"priority_{priority}"] = _summarise(runs[priority]) | {
            "export_time": export_time}
    return variants


def measure_with_load(web: WebServer, cookie: str, args) -> dict:
    """One measurement of both pages, each with the web processes' CPU milliseconds per page
    served and the milliseconds per page they spent waiting for a CPU (ready to run, not
    running: /proc/<pid>/schedstat), which the machine's other tenants disturb far less than
    the latency; and the 1-minute load average at its end."""
    figures: dict = {}
    for name, path in PATHS.items():
        before = web_schedstat(web)
        result = run_load(web.port, path, cookie, args.connections, args.duration,
                          accept=ACCEPT[name])
        after = web_schedstat(web)
        figures |= phase_figures({name: result})
        pages = max(len(result.latencies), 1)
        figures[name]["cpu_ms"] = (after[0] - before[0]) / 1e6 / pages
        figures[name]["wait_ms"] = (after[1] - before[1]) / 1e6 / pages
    figures["loadavg"] = os.getloadavg()[0]
    return figures


# A client process that requests the home page over `connections` keep-alive connections
# until killed, printing how many pages it has been served so far, once a second.
HAMMER = """
import sys
from bench.harness import run_load
port, cookie, connections, served = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), 0
while True:
    served += len(run_load(port, "/", cookie, connections, 1.0).latencies)
    print(served, flush=True)
"""


class Hammer:
    """`processes` client processes (one Python client alone cannot keep a web of four
    processes busy: its GIL is the limit) hammering the home page until stopped; what they
    are served counts from each one's first second on."""

    def __init__(self, web: WebServer, cookie: str, processes: int, connections: int) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(web.port), cookie, str(connections)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        self.first = [int(proc.stdout.readline() or 0) for proc in self.procs]  # all running

    def stop(self) -> int:
        """Stop the clients; the pages they were served."""
        served = 0
        for proc, first in zip(self.procs, self.first, strict=True):
            proc.terminate()
            lines = proc.communicate(timeout=30)[0].split()
            served += int(lines[-1]) - first if lines else 0
        return served


def _export_time(services: Services, web: WebServer, cookie: str, exporter_ids: list[int],
                 args, hammer: bool) -> dict:
    """Seconds from launching one export for each exporter to both being complete; with
    `hammer`, while `--hammer-processes` clients of `--connections` each keep requesting the
    home page (what a job at low priority is slowed down by: a web that never leaves the
    CPU). At most `--export-seconds`: the exports' progress is recorded then, and the caller
    ends them (jobs at the lowest priority on a machine that other tenants keep busy may
    crawl for minutes)."""
    import sqlalchemy as sa

    from app import db
    from app.models import Task, User

    def unfinished() -> list[int]:
        progress = list(db.session.scalars(sa.select(Task.progress).where(
            Task.user_id.in_(exporter_ids), Task.complete.is_(False))))
        db.session.rollback()
        return progress

    clients = Hammer(web, cookie, args.hammer_processes, args.connections) if hammer else None
    started = time.perf_counter()
    served = 0
    try:
        for user_id in exporter_ids:
            db.session.get(User, user_id).launch_task("export_posts", "Exporting posts...")
        db.session.remove()
        time.sleep(0.2)
        while (left := unfinished()) and time.perf_counter() - started < args.export_seconds:
            time.sleep(0.2)
    finally:
        if clients is not None:
            served = clients.stop()
    return {"s": None if left else round(time.perf_counter() - started, 2),
            "progress_at_cap": left or None, "cap_s": args.export_seconds,
            "pages_served": served, "loadavg": round(os.getloadavg()[0], 2)}


def _said(timed: dict) -> str:
    if timed["s"] is not None:
        return f"{timed['s']:.1f} s"
    return f"not done in {timed['cap_s']:.0f} s (progress {timed['progress_at_cap']} %)"


def _end_exports(services: Services, exporter_ids: list[int], workers: list) -> None:
    """Cancel the exporters' unfinished exports and stop the workers at once (RQ's cold
    shutdown: a second SIGTERM kills the work horse), rather than wait for jobs that may be
    crawling at the lowest priority."""
    import sqlalchemy as sa

    from app import db
    from app.jobs import lifecycle
    from app.models import Task

    for task in db.session.scalars(sa.select(Task).where(
            Task.user_id.in_(exporter_ids), Task.complete.is_(False))):
        try:
            lifecycle.cancel(task, "benchmark phase over")
        except lifecycle.TaskNotActive:
            pass
    db.session.commit()
    db.session.remove()
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)  # warm shutdown requested ...
    time.sleep(2)  # ... RQ takes a second SIGTERM within a second of the first as the same
    for worker in workers:
        worker.stop()  # ... this one as the cold shutdown
    _wait_for_exports_to_end(services, exporter_ids)


def _web_figures(web: WebServer) -> dict:
    """The web processes' memory (MB), the connections each holds, and their CPU so far."""
    group = process_group(web.pid, web.port)
    return {"rss_mb": sum(p.rss_kb for p in group) / 1024,
            "pss_mb": sum(p.pss_kb for p in group) / 1024,
            "cpu_s": sum(p.cpu_s for p in group),
            "connections": {p.pid: p.connections for p in group}}


def _cpu_over(web: WebServer, seconds: float) -> float:
    """CPU seconds the web processes spend in the next `seconds` (nothing else asked)."""
    before = _web_figures(web)["cpu_s"]
    time.sleep(seconds)
    return _web_figures(web)["cpu_s"] - before


def _load_with_cpu(web: WebServer, cookie: str, args) -> tuple[LoadResult, float]:
    """The home page's load, and the web processes' CPU milliseconds per page served: a
    cost that the machine's other tenants disturb far less than the latency."""
    before = _web_figures(web)["cpu_s"]
    result = run_load(web.port, "/", cookie, args.connections, args.duration)
    spent = _web_figures(web)["cpu_s"] - before
    return result, 1000 * spent / max(len(result.latencies), 1)


def streams_phase(services: Services, web: WebServer, cookie: str, args) -> dict:
    """The home page with none and with every stream open (per repetition), and what the
    open streams cost the web processes in memory and CPU."""
    cookies = [login(web.port, f"watcher{i}") for i in range(args.stream_users)]
    count = args.stream_users * args.streams_per_user
    heartbeat = services.app.config["EVENTS_HEARTBEAT"]
    without = _web_figures(web)
    cpu_without = _cpu_over(web, args.cpu_seconds)
    runs, held, cpu_with, ended = [], {}, 0.0, 0
    with StreamClients() as clients:
        for rep in range(args.repeat):
            none, none_cpu_ms = _load_with_cpu(web, cookie, args)
            started = time.perf_counter()
            streams = clients.open(web.port, cookies, args.streams_per_user)
            opened_s = time.perf_counter() - started
            if rep == 0:
                held = _web_figures(web)
                cpu_with = _cpu_over(web, args.cpu_seconds)
            loaded, open_cpu_ms = _load_with_cpu(web, cookie, args)
            ended += sum(s.ended_by_server for s in streams)
            clients.close(streams)
            runs.append(phase_figures({"none": none, "open": loaded}) | {"opened_s": opened_s})
            runs[-1]["none"]["cpu_ms"], runs[-1]["open"]["cpu_ms"] = none_cpu_ms, open_cpu_ms
            say(f"pages: streams run {rep + 1}/{args.repeat}: {count} streams opened in "
                f"{opened_s:.1f} s; home p99 {runs[-1]['none']['p99_ms']:.1f} ms with none, "
                f"{runs[-1]['open']['p99_ms']:.1f} ms with them open")
            if rep + 1 < args.repeat:  # a closed stream is let go at its next keep-alive
                wait_until(lambda: sum(_web_figures(web)["connections"].values()) == 0,
                           2 * heartbeat + 60, "the web processes to let the streams go", 1.0)
    per_worker = sorted((n for pid, n in held["connections"].items() if pid != web.pid),
                        reverse=True)  # not the master: it accepts nothing
    return {
        "streams": count, "users": args.stream_users, "per_user": args.streams_per_user,
        "home": {phase: {key: summary([r[phase][key] for r in runs], 2)
                         for key in ("rps", "p50_ms", "p99_ms", "errors", "cpu_ms")}
                 for phase in ("none", "open")},
        "p99_open_over_none": summary([r["open"]["p99_ms"] / r["none"]["p99_ms"] for r in runs]),
        "opened_s": summary([r["opened_s"] for r in runs], 2),
        "ended_by_server": ended,
        "rss_mb": {"none": round(without["rss_mb"], 1), "open": round(held["rss_mb"], 1)},
        "pss_mb": {"none": round(without["pss_mb"], 1), "open": round(held["pss_mb"], 1)},
        "streams_per_web_process": per_worker,
        "cpu_seconds": args.cpu_seconds,
        "cpu_s": {"none": round(cpu_without, 3), "open": round(cpu_with, 3)},
        "cpu_s_per_1000_streams_per_minute": round(
            (cpu_with - cpu_without) * (1000 / count) * (60 / args.cpu_seconds), 3),
        "target": {"p99_open_over_none_max": 1.5},
    }


def _wait_for_exports_to_end(services: Services, user_ids: list[int]) -> None:
    import sqlalchemy as sa

    from app import db
    from app.models import Task

    def ended() -> bool:
        count = db.session.scalar(sa.select(sa.func.count(Task.id)).where(
            Task.user_id.in_(user_ids), Task.complete.is_(False)))
        db.session.rollback()
        return count == 0

    wait_until(ended, 600, "the exports to end", interval=0.2)


def _summarise(runs: list[dict]) -> dict:
    """Medians (min–max) over the repetitions; the idle figures over every idle measurement.
    A repetition's busy/idle ratio compares its busy p99 with the median of its own idle
    p99s; the pooled ratio, the busy median with the median of all the idle measurements."""
    idles = [i for r in runs for i in r["idles"]]
    out: dict = {"idle": {}, "busy": {}, "idle_measurements": len(idles)}
    for page in PATHS:
        for phase, measured in (("idle", idles), ("busy", [r["busy"] for r in runs])):
            out[phase][page] = {key: summary([m[page][key] for m in measured], 2)
                                for key in ("rps", "p50_ms", "p99_ms", "errors", "cpu_ms",
                                            "wait_ms")}

    def idle_median(run: dict, page: str, key: str) -> float:
        return statistics.median(i[page][key] for i in run["idles"])

    out["p99_busy_over_idle"] = {
        page: summary([r["busy"][page]["p99_ms"] / idle_median(r, page, "p99_ms")
                       for r in runs]) for page in PATHS}
    out["p99_busy_over_idle_pooled"] = {
        page: round(out["busy"][page]["p99_ms"]["median"]
                    / out["idle"][page]["p99_ms"]["median"], 3) for page in PATHS}
    out["p50_busy_over_idle"] = {
        page: summary([r["busy"][page]["p50_ms"] / idle_median(r, page, "p50_ms")
                       for r in runs]) for page in PATHS}
    # the cost of the progress endpoint against a page render, idle
    out["notifications_cost_over_page_p50"] = summary(
        [i["notifications"]["p50_ms"] / i["home"]["p50_ms"] for i in idles])
    out["notifications_cost_over_page_rps"] = summary(
        [i["home"]["rps"] / i["notifications"]["rps"] for i in idles])
    out["both_exports_running"] = summary([r["busy"]["both_exports_running"] for r in runs])
    out["exports_launched"] = summary([r["busy"]["exports_launched"] for r in runs], 0)
    out["loadavg"] = {"idle": summary([i["loadavg"] for i in idles], 2),
                      "busy": summary([r["busy"]["loadavg"] for r in runs], 2)}
    return out


def report(result: dict) -> str:
    parts = []
    if "variants" in result:
        parts.append(_report_exports(result))
    if "streams" in result:
        parts.append(_report_streams(result["streams"]))
    return "\n\n".join(parts) + (
        f"\n({result['connections']} connections, {result['duration_s']} s per measurement; "
        f"median (min–max) of {result['repeat']} runs)")


def _report_exports(result: dict) -> str:
    rows = []
    for variant, v in result["variants"].items():
        priority = variant.removeprefix("priority_")
        for phase in ("idle", "busy"):
            label = (f"idle (×{v['idle_measurements']})" if phase == "idle"
                     else "two exports running")
            for page in PATHS:
                f = v[phase][page]
                rows.append([priority, label, page, fmt(f["rps"], digits=0),
                             fmt(f["p50_ms"], digits=1), fmt(f["p99_ms"], digits=1),
                             int(f["errors"]["max"] or 0), fmt(f["cpu_ms"], digits=1),
                             fmt(f["wait_ms"], digits=1), fmt(v["loadavg"][phase], digits=1)])
    text = table(["workers' jobs", "phase", "page", "req/s", "p50 ms", "p99 ms", "errors",
                  "web CPU ms/page", "web wait ms/page", "load avg"], rows)
    for variant, v in result["variants"].items():
        ratio, pooled, times = v["p99_busy_over_idle"], v["p99_busy_over_idle_pooled"], \
            v["export_time"]
        text += (f"\nWORKER_CPU_PRIORITY={variant.removeprefix('priority_')}: p99 busy/idle "
                 f"home {fmt(ratio['home'])} (pooled {pooled['home']}), notifications "
                 f"{fmt(ratio['notifications'])} (pooled {pooled['notifications']}) "
                 f"(target ≤ 1.5); both exports running {fmt(v['both_exports_running'])} of "
                 f"the busy time; two exports, web idle: {_said(times['web_idle'])}, home page "
                 f"hammered: {_said(times['web_hammered'])} "
                 f"({times['web_hammered']['pages_served']} pages served meanwhile)")
    first = next(iter(result["variants"].values()))
    return text + ("\nnotifications / home page, p50 latency: "
                   f"{fmt(first['notifications_cost_over_page_p50'])} (target < 1); home req/s "
                   f"over notifications req/s: {fmt(first['notifications_cost_over_page_rps'])}")


def _report_streams(s: dict) -> str:
    rows = [[f"{s['streams'] if phase == 'open' else 0} streams open", "home",
             fmt(f["rps"], digits=0), fmt(f["p50_ms"], digits=1), fmt(f["p99_ms"], digits=1),
             int(f["errors"]["max"] or 0), fmt(f["cpu_ms"], digits=1)]
            for phase, f in s["home"].items()]
    rss, pss, cpu = s["rss_mb"], s["pss_mb"], s["cpu_s"]
    return table(["phase", "page", "req/s", "p50 ms", "p99 ms", "errors", "web CPU ms/page"],
                 rows) + (
        f"\np99 with the streams / without: {fmt(s['p99_open_over_none'])} (target ≤ 1.5); "
        f"{s['streams']} streams ({s['users']} users × {s['per_user']}) opened in "
        f"{fmt(s['opened_s'], ' s', 1)}, per web process {s['streams_per_web_process']}, "
        f"ended by the server {s['ended_by_server']}"
        f"\nweb processes: RSS {rss['none']} → {rss['open']} MB, PSS {pss['none']} → "
        f"{pss['open']} MB; CPU over {s['cpu_seconds']} s idle: {cpu['none']} s without, "
        f"{cpu['open']} s with the streams → {s['cpu_s_per_1000_streams_per_minute']} s "
        f"per 1,000 streams per minute")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle-repeat", type=int, default=2,
                        help="idle measurements before each busy one (the quiet baseline)")
    parser.add_argument("--hammer-processes", type=int, default=2,
                        help="client processes hammering the home page while exports are "
                             "timed (each with --connections)")
    parser.add_argument("--export-seconds", type=float, default=60.0,
                        help="at most this long are two exports timed (web idle, hammered)")
    parser.add_argument("--priorities", default=None,
                        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
                        help="WORKER_CPU_PRIORITY values to compare, in this order "
                             "(default idle,normal; --quick: idle; batch on request)")
    parser.add_argument("--export-posts", type=int, default=300_000,
                        help="posts of each of the two exporting users")
    parser.add_argument("--phases", default="exports,streams",
                        type=lambda text: [p for p in text.split(",") if p],
                        help="which phases to run: exports (idle/busy), streams")
    parser.add_argument("--stream-users", type=int, default=50)
    parser.add_argument("--streams-per-user", type=int, default=20)
    parser.add_argument("--cpu-seconds", type=float, default=60.0,
                        help="how long the web processes' CPU is measured, with and without")
    parser.add_argument("--quick", action="store_true",
                        help="0.5 s per measurement, one run, small exports, 100 streams, "
                             "3 s of CPU (smoke test)")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true",
                        help="worker warmed up as docs/performance.md proposes (3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.export_posts = 0.5, 1, 2_000
        args.stream_users, args.streams_per_user, args.cpu_seconds = 10, 10, 3.0
        args.idle_repeat, args.export_seconds = 1, 5.0
    if args.priorities is None:
        args.priorities = ["idle"] if args.quick else ["idle", "normal"]
    result = run(args)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
