"""Export throughput and memory: the real `export_posts` task, launched the way the web does
(`user.launch_task`), run by a real worker started as `make run` starts it, timed from the
enqueue to the moment the SMTP server accepts the email; against the limit measured in the
same run: one plain DB-API query of the same rows written to the same JSON file by a minimal
loop (no ORM, no queue, no mail).

Then every format of the export centre (json, csv, activitystreams), against the same limit:
`write_export` alone, in this process, into a file; and the export as a user starts it
(`app.exports.actions.start_export`), run by a real worker into export storage, timed from the start
to the finished Task row, with the Export row's size and post count checked against the file
in storage. (A format writes more than the limit's JSON, the archive a lot more before it is
deflated: the ratio says what each format costs, not how far it is from its own floor.)

The worker is started afresh (and waited for) before each export and stopped after it, so
wait4() gives the peak RSS of that export: the largest of the worker and its work horse.
`--worker plain` runs those exports on the tutorial's command, `rq worker -u $REDIS_URL
microblog-tasks`, instead of `make run`'s AppWorker.

Then, at each size up to 100,000 posts, the JSON export on both workers in turn: plain
`rq worker`, whose work horse imports app.tasks (and so builds the app) for every job, against
AppWorker, which builds it once in the worker (target: plain within 1.2 x AppWorker).

    python -m bench export [--sizes 10000,100000,1000000] [--repeat 3] [--quick]
                           [--database sqlite|postgresql] [--worker app|plain]
                           [--skip formats,workers]
                           [--plot docs/export-throughput.png]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import time
from datetime import UTC
from pathlib import Path

from bench.harness import (
    PLAIN_WORKER_LABEL,
    POSTGRES_URL,
    Services,
    add_posts,
    analyze,
    emit,
    fmt,
    number,
    say,
    summary,
    table,
    wait_until,
)

NAME = "export"
# The job class of the workers that run real_export: it times the export's phases (PHASES).
PHASED_JOB = "bench.phases.PhasedJob"


def limit_export(services: Services, user_id: int, username: str, out_path: Path,
                 cpu: list | None = None) -> float:
    """The limit: one plain query, a minimal loop, the same JSON. Returns seconds; appends
    the CPU seconds this process spent on it to `cpu` (on SQLite the query's too, the
    database being in the process; on PostgreSQL the server's work is not counted, as it is
    not for the export)."""
    from app.models import utcnow

    cpu_started = time.process_time()
    started = time.perf_counter()
    conn = _dbapi_connect(services)
    try:
        header = json.dumps({"format": "microblog-posts", "version": 1, "user": username,
                             "exported_at": utcnow().isoformat() + "Z"}, ensure_ascii=False)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        sqlite = services.database == "sqlite"
        cursor = conn.cursor() if sqlite else conn.cursor(name="limit")  # server-side on PG
        cursor.execute(
            'SELECT id, body, "timestamp", language FROM post WHERE user_id = '
            + ("?" if sqlite else "%s") + ' ORDER BY "timestamp", id', (user_id,))
        with open(out_path, "w", encoding="utf-8") as out:
            out.write(header[:-1] + ', "posts": [')
            separator = "\n"
            while rows := cursor.fetchmany(10_000):
                for post_id, body, stamp, language in rows:
                    # SQLite holds 'YYYY-MM-DD HH:MM:SS.ffffff'; isoformat() drops .000000
                    stamp = (stamp.replace(" ", "T").removesuffix(".000000") if sqlite
                             else stamp.isoformat())
                    out.write(f'{separator}{{"id": {post_id}, "body": {encode(body)}, '
                              f'"timestamp": "{stamp}Z", "language": {encode(language)}}}')
                    separator = ",\n"
            out.write("\n]}\n")
        cursor.close()
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    return seconds


def _dbapi_connect(services: Services):
    if services.database == "sqlite":
        import sqlite3

        return sqlite3.connect(services.database_url[len("sqlite:///"):])
    import psycopg

    return psycopg.connect(POSTGRES_URL)


def real_export(services: Services, user_id: int, timeout: float, plain: bool = False) -> dict:
    """One export through a fresh worker (`plain`: the tutorial's command): seconds from
    enqueue to mail, seconds of the RQ job (its work horse's started_at to ended_at), CPU
    seconds the worker and its work horse spent on it, peak RSS, mail."""
    from rq.job import Job

    from app import db
    from app.models import Task, TaskStatus, User

    worker = services.start_worker(plain=plain, job_class=PHASED_JOB)
    try:
        idle_rss_kb = worker.status_kb("VmRSS") or 0
        user = db.session.get(User, user_id)
        seen = len(services.smtp.messages)
        memory = worker.memory().__enter__()
        cpu_before = process_cpu_seconds(worker.worker_pid)
        started = time.perf_counter()
        enqueued_at = time.time()
        task = user.launch_task("export_posts", "Exporting posts...")
        task_id = task.id
        mail = None

        def ended() -> Task | None:
            db.session.expire_all()
            row = db.session.get(Task, task_id)
            db.session.rollback()
            return row if row.complete else None

        deadline = time.monotonic() + timeout
        while mail is None:
            try:  # wait for the mail, looking at the task and worker every second
                mail = services.smtp.wait_for(user.email, seen, timeout=1.0)
            except TimeoutError:
                worker.check_alive()
                row = ended()
                if (row and row.status != TaskStatus.FINISHED) or time.monotonic() > deadline:
                    raise RuntimeError(f"export failed or timed out ({row and row.status}); "
                                       f"worker log:\n{worker.log_tail()}") from None
        seconds = mail.received - started
        deadline = time.monotonic() + 60
        while (row := ended()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if row is None or row.status != TaskStatus.FINISHED:
            raise RuntimeError(f"export task did not finish: {row and row.status}\n"
                               f"{worker.log_tail()}")
        memory.__exit__()
        job = Job.fetch(task_id, connection=services.redis)  # the task's id is its job's
        job_seconds = ((job.ended_at - job.started_at).total_seconds()
                       if job.started_at and job.ended_at else float("nan"))
        cpu_seconds = job_cpu_seconds(services, worker, cpu_before)
        phases = phase_breakdown(job, enqueued_at, enqueued_at + seconds)
    finally:
        worker.stop()
    return {"seconds": seconds, "job_seconds": job_seconds, "cpu_seconds": cpu_seconds,
            "phases": phases,
            "peak_rss_mb": worker.peak_rss_mb,
            "worker_rss_mb": idle_rss_kb / 1024, "mail_bytes": mail.size, "mail": mail}


# Where an export's time goes, from the enqueue to the finished job: (name, what it covers,
# the mark that ends it). Marks: "enqueued" (by the benchmark, just before launch_task),
# "horse" (the job's started_at, set by RQ in the work horse), the marks PHASED_JOB leaves in
# job.meta["phases"] (bench/phases.py), "ended" (the job's ended_at).
PHASES = (
    ("launch -> horse", "launch_task (commit, enqueue), dequeue, fork of the work horse",
     "horse"),
    ("horse -> task", "RQ's set-up in the work horse until the task function runs", "task"),
    ("lifecycle start", "jobs.start: the Task row marked running", "started"),
    ("first queries", "user, Export row, count of the posts", "counted"),
    ("first batch", "the file opened, the first batch read and written", "first_batch"),
    ("writing", "the other batches, the file closed and recorded", "written"),
    ("mail build", "templates rendered, the message composed", "mail_built"),
    ("mail send", "the MIME message written out to the SMTP server", "mail_sent"),
    ("finish", "jobs.finish, RQ's end of the job", "ended"),
)


def phase_breakdown(job, enqueued_at: float, mail_received: float) -> dict:
    """Seconds of each PHASES entry for one export job (None when a mark is missing), and
    "mail received": when the SMTP server had the whole mail, from the enqueue."""
    def stamp(value) -> float | None:
        if value is None:
            return None
        if value.tzinfo is None:  # RQ's datetimes are UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()

    marks = {"enqueued": enqueued_at, "horse": stamp(job.started_at),
             "ended": stamp(job.ended_at), **(job.meta.get("phases") or {})}
    result, previous = {}, marks["enqueued"]
    for name, _, mark in PHASES:
        at = marks.get(mark)
        result[name] = None if at is None or previous is None else at - previous
        previous = at
    result["total (enqueue -> job ended)"] = (
        None if marks["ended"] is None else marks["ended"] - enqueued_at)
    result["mail received (enqueue -> SMTP)"] = mail_received - enqueued_at
    return result


def process_cpu_seconds(pid: int | None) -> float:
    """CPU time of a process and of the children it has reaped (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    # utime, stime, cutime, cstime: fields 14-17 of stat(5), counted after the command name
    return sum(int(tick) for tick in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def job_cpu_seconds(services: Services, worker, before: float) -> float:
    """The CPU the worker spent on its job since `before`, its work horse's included: read
    once the worker is idle again, which it is only after reaping the horse. Unlike the job's
    wall time, this hardly depends on what else the machine is running."""
    from rq import Worker

    def idle() -> bool:
        return any(w.pid == worker.worker_pid and w.state == "idle"
                   for w in Worker.all(connection=services.redis))

    wait_until(idle, 120, "the worker to be idle again", interval=0.02)
    return process_cpu_seconds(worker.worker_pid) - before


def verify_same_posts(mail_content: bytes, limit_file: Path) -> bool:
    """The email's posts.json holds exactly the posts the limit wrote (the baseline is fair)."""
    message = email.message_from_bytes(mail_content, policy=email.policy.default)
    for part in message.iter_attachments():
        if part.get_filename() == "posts.json":
            exported = json.loads(part.get_content())["posts"]
            return exported == json.loads(limit_file.read_text(encoding="utf-8"))["posts"]
    return False


def write_in_process(user_id: int, fmt: str, out_path: Path) -> float:
    """write_export alone, in this process (no queue, no worker, no storage). Seconds."""
    from app import db
    from app.exports.formats import write_export
    from app.models import User

    user = db.session.get(User, user_id)
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        write_export(fmt, user, out)
    seconds = time.perf_counter() - started
    db.session.rollback()
    return seconds


def centre_export(services: Services, user_id: int, fmt: str, posts: int,
                  timeout: float, plain: bool = False) -> dict:
    """One export as a user starts it (start_export), through a fresh worker: seconds from
    the start to the finished Task row, the worker's peak RSS, the file's size. Checks that
    the Export row records the file in storage and all the posts."""
    from app import db
    from app.exports.actions import start_export
    from app.exports.storage import get_storage
    from app.models import Export, Task, TaskStatus, User

    worker = services.start_worker(plain=plain)
    try:
        idle_rss_kb = worker.status_kb("VmRSS") or 0
        started = time.perf_counter()
        export = start_export(db.session.get(User, user_id), fmt)
        export_id, task_id = export.id, export.task_id
        deadline = time.monotonic() + timeout
        while True:
            db.session.expire_all()
            task = db.session.get(Task, task_id)
            if task.complete:
                seconds = time.perf_counter() - started
                break
            db.session.rollback()
            worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{fmt} export timed out; worker log:\n{worker.log_tail()}")
            time.sleep(0.05)
        if task.status != TaskStatus.FINISHED:
            raise RuntimeError(f"{fmt} export ended {task.status}: {task.error}\n"
                               f"{worker.log_tail()}")
        export = db.session.get(Export, export_id)
        storage = get_storage()
        if not (export.storage_key and storage.exists(export.storage_key)):
            raise RuntimeError(f"{fmt} export finished without a file in storage")
        if export.size != storage.size(export.storage_key) or export.posts_count != posts:
            raise RuntimeError(f"{fmt} export recorded {export.posts_count} posts, "
                               f"{export.size} bytes; storage has "
                               f"{storage.size(export.storage_key)} bytes of {posts} posts")
        file_bytes = export.size
        db.session.rollback()
    finally:
        worker.stop()
    return {"seconds": seconds, "peak_rss_mb": worker.peak_rss_mb,
            "worker_rss_mb": idle_rss_kb / 1024, "file_bytes": file_bytes}


def run_formats(services: Services, users: dict, sizes: list[int], repeat: int,
                limit_file: Path, plain: bool = False) -> dict:
    """Every format at every size: write_export alone and the centre's export, each against
    the limit measured right before it."""
    from app.exports.formats import FORMATS

    results: dict[str, list[dict]] = {fmt: [] for fmt in FORMATS}
    written = services.tmp / "written"
    for size in sizes:
        user_id, username = users[size]
        for name in FORMATS:
            runs = []
            for rep in range(repeat):
                limit_s = limit_export(services, user_id, username, limit_file)
                write_s = write_in_process(user_id, name, written)
                written.unlink()
                export = centre_export(services, user_id, name, size,
                                       timeout=120 + size / 500, plain=plain)
                runs.append({"limit_s": limit_s, "write_s": write_s,
                             "task_s": export["seconds"], "peak_rss_mb": export["peak_rss_mb"],
                             "worker_rss_mb": export["worker_rss_mb"],
                             "file_bytes": export["file_bytes"]})
                say(f"export {name}: {size:,} posts, run {rep + 1}/{repeat}: write_export "
                    f"{write_s:.2f} s, centre export {export['seconds']:.2f} s, limit "
                    f"{limit_s:.2f} s, peak RSS {number(export['peak_rss_mb'], 0)} MB, file "
                    f"{export['file_bytes'] / 2**20:.1f} MB")
            limit_file.unlink(missing_ok=True)
            results[name].append(_format_result(size, runs))
    summary_by_format = {}
    for name, by_size in results.items():
        growth = None
        peaks = [r["peak_rss_mb"]["median"] for r in by_size]
        if len(by_size) > 1 and None not in (peaks[0], peaks[-1]):
            growth = round(peaks[-1] - peaks[0], 1)
        summary_by_format[name] = {"sizes": by_size, "rss_growth_mb": growth}
    return summary_by_format


# The tutorial's command is compared with AppWorker up to this size: beyond it, building the
# app in the work horse is a small part of the export whichever worker runs it.
WORKER_COMPARISON_MAX_POSTS = 100_000


def compare_workers(services: Services, users: dict, sizes: list[int], repeat: int) -> list:
    """The JSON export on plain `rq worker` and on AppWorker, in turn, at each size up to
    WORKER_COMPARISON_MAX_POSTS: enqueue-to-mail and RQ job seconds, and their ratios."""
    results = []
    for size in [s for s in sizes if s <= WORKER_COMPARISON_MAX_POSTS]:
        runs = []
        for rep in range(repeat):
            order = (False, True) if rep % 2 == 0 else (True, False)
            run = {}
            for plain in order:
                run["plain" if plain else "app"] = real_export(
                    services, users[size][0], timeout=120 + size / 1000, plain=plain)
            runs.append(run)
            say(f"export: {size:,} posts, run {rep + 1}/{repeat}: plain rq worker "
                f"{run['plain']['seconds']:.2f} s (job {number(run['plain']['job_seconds'])} s, "
                f"CPU {number(run['plain']['cpu_seconds'])} s), AppWorker "
                f"{run['app']['seconds']:.2f} s (job {number(run['app']['job_seconds'])} s, "
                f"CPU {number(run['app']['cpu_seconds'])} s)")
        results.append({"posts": size, **{
            f"{kind}_{figure}": summary([r[kind][key] for r in runs])
            for kind in ("plain", "app")
            for figure, key in (("export_s", "seconds"), ("job_s", "job_seconds"),
                                ("cpu_s", "cpu_seconds"))},
            "export_ratio": summary([r["plain"]["seconds"] / r["app"]["seconds"] for r in runs]),
            "job_ratio": summary([r["plain"]["job_seconds"] / r["app"]["job_seconds"]
                                  for r in runs]),
            "cpu_ratio": summary([r["plain"]["cpu_seconds"] / r["app"]["cpu_seconds"]
                                  for r in runs])})
    return results


def _format_result(size: int, runs: list[dict]) -> dict:
    return {
        "posts": size,
        "write_s": summary([r["write_s"] for r in runs]),
        "task_s": summary([r["task_s"] for r in runs]),
        "limit_s": summary([r["limit_s"] for r in runs]),
        # each run against the limit measured right before it: limit time / export time
        "write_ratio": summary([r["limit_s"] / r["write_s"] for r in runs]),
        "task_ratio": summary([r["limit_s"] / r["task_s"] for r in runs]),
        "write_posts_per_s": summary([size / r["write_s"] for r in runs], 1),
        "peak_rss_mb": summary([r["peak_rss_mb"] for r in runs], 1),
        "worker_rss_mb": summary([r["worker_rss_mb"] for r in runs], 1),
        "file_mb": round(runs[0]["file_bytes"] / 2**20, 2),
    }


PARTS = ("formats", "workers")


def run(sizes: list[int], repeat: int, database: str, proposed: bool = False,
        plain: bool = False, parts: tuple[str, ...] = PARTS) -> dict:
    # The centre refuses a second export within the cooldown; the bench runs many.
    os.environ["EXPORT_COOLDOWN"] = "0"
    with Services(NAME, database=database, proposed=proposed) as services:
        from app import db
        from bench.harness import create_user

        users = {}
        for size in sizes:
            t = time.perf_counter()
            user = create_user(f"export{size}", password=None)
            add_posts(user.id, size)
            users[size] = (user.id, user.username)
            say(f"export: {size:,} posts generated in {time.perf_counter() - t:.1f} s")
        analyze()
        db.session.rollback()
        machine = services.machine()
        limit_file = services.tmp / "limit.json"
        results = []
        for size in sizes:
            user_id, username = users[size]
            runs = []
            for rep in range(repeat):
                verify = rep == 0 and size == min(sizes)
                services.smtp.keep_content = verify
                limit_cpu: list[float] = []
                limit_s = limit_export(services, user_id, username, limit_file, limit_cpu)
                limit_bytes = limit_file.stat().st_size
                export = real_export(services, user_id, timeout=120 + size / 1000,
                                     plain=plain)
                if verify and export["mail"].content and b"posts.json" in export["mail"].content:
                    if not verify_same_posts(export["mail"].content, limit_file):
                        raise RuntimeError("the limit's JSON differs from the export's posts")
                    say(f"export: checked: the limit wrote exactly the export's {size} posts")
                runs.append({"export_s": export["seconds"], "limit_s": limit_s,
                             "export_cpu_s": export["cpu_seconds"], "limit_cpu_s": limit_cpu[0],
                             "phases": export["phases"],
                             "peak_rss_mb": export["peak_rss_mb"],
                             "worker_rss_mb": export["worker_rss_mb"],
                             "mail_bytes": export["mail_bytes"], "json_bytes": limit_bytes})
                say(f"export: {size:,} posts, run {rep + 1}/{repeat}: export "
                    f"{export['seconds']:.2f} s, limit {limit_s:.2f} s, peak RSS "
                    f"{number(export['peak_rss_mb'], 0)} MB")
            limit_file.unlink(missing_ok=True)
            results.append(_size_result(size, runs))
        formats = (run_formats(services, users, sizes, repeat, limit_file, plain)
                   if "formats" in parts else {})
        services.smtp.keep_content = False
        workers = compare_workers(services, users, sizes, repeat) if "workers" in parts else []
    smallest, largest = results[0], results[-1]
    growth = None
    if smallest["peak_rss_mb"]["median"] is not None and len(results) > 1:
        growth = round(largest["peak_rss_mb"]["median"] - smallest["peak_rss_mb"]["median"], 1)
    return {"machine": machine, "repeat": repeat, "sizes": results,
            "worker": PLAIN_WORKER_LABEL if plain else services.worker_class_label,
            "rss_growth_mb": growth,
            "formats": formats,
            "workers": workers,
            "targets": {"ratio_min": 0.5, "ratio_sizes": [100_000, 1_000_000],
                        "rss_growth_max_mb": 64, "plain_worker_ratio_max": 1.2}}


def _size_result(size: int, runs: list[dict]) -> dict:
    export_pps = [size / r["export_s"] for r in runs]
    limit_pps = [size / r["limit_s"] for r in runs]
    return {
        "posts": size,
        "export_posts_per_s": summary(export_pps, 1),
        "limit_posts_per_s": summary(limit_pps, 1),
        # each run's export against the limit measured right before it
        "ratio": summary([e / lim for e, lim in zip(export_pps, limit_pps, strict=True)]),
        "export_s": summary([r["export_s"] for r in runs]),
        "limit_s": summary([r["limit_s"] for r in runs]),
        # the same ratio in CPU seconds (the worker and its work horse; this process for
        # the limit): what the load of the machine changes least
        "export_cpu_s": summary([r["export_cpu_s"] for r in runs]),
        "limit_cpu_s": summary([r["limit_cpu_s"] for r in runs]),
        "cpu_ratio": summary([r["limit_cpu_s"] / r["export_cpu_s"] for r in runs]),
        "peak_rss_mb": summary([r["peak_rss_mb"] for r in runs], 1),
        "worker_rss_mb": summary([r["worker_rss_mb"] for r in runs], 1),
        "json_mb": round(runs[0]["json_bytes"] / 2**20, 2),
        "mail_mb": round(runs[0]["mail_bytes"] / 2**20, 2),
        # milliseconds of each phase (PHASES), median (min-max) of the runs
        "phases_ms": {name: summary([r["phases"][name] * 1000 for r in runs
                                     if r["phases"][name] is not None], 1)
                      for name in runs[0]["phases"]},
    }


def report(result: dict) -> str:
    rows = [[f"{r['posts']:,}", fmt(r["export_posts_per_s"], digits=0),
             fmt(r["limit_posts_per_s"], digits=0), fmt(r["ratio"]),
             fmt(r["export_cpu_s"]), fmt(r["limit_cpu_s"]), fmt(r["cpu_ratio"]),
             fmt(r["peak_rss_mb"], digits=0), f"{r['json_mb']:.1f}", f"{r['mail_mb']:.2f}"]
            for r in result["sizes"]]
    text = table(["posts", "export posts/s", "limit posts/s", "export/limit",
                  "export CPU s", "limit CPU s", "limit/export (CPU)",
                  "peak RSS MB", "JSON MB", "mail MB"], rows)
    if result["rss_growth_mb"] is not None:
        text += (f"\npeak RSS growth {result['sizes'][0]['posts']:,} -> "
                 f"{result['sizes'][-1]['posts']:,} posts: {result['rss_growth_mb']} MB")
    text += "\n\nWhere the time goes, ms (median (min–max)); phases end at:\n"
    names = list(result["sizes"][0]["phases_ms"])
    text += table(["phase", *(f"{r['posts']:,} posts" for r in result["sizes"])],
                  [[name, *(fmt(r["phases_ms"][name], digits=1) for r in result["sizes"])]
                   for name in names])
    text += "".join(f"\n  {name}: {what}" for name, what, _ in PHASES)
    if result["formats"]:
        text += "\n\nThe export centre's formats (ratios: limit time / export time)\n"
        rows = []
        for name, data in result["formats"].items():
            rows += [[name, f"{r['posts']:,}", fmt(r["write_s"]), fmt(r["task_s"]),
                      fmt(r["limit_s"]), fmt(r["write_ratio"]), fmt(r["task_ratio"]),
                      fmt(r["peak_rss_mb"], digits=0), f"{r['file_mb']:.2f}"]
                     for r in data["sizes"]]
        text += table(["format", "posts", "write_export s", "centre export s", "limit s",
                       "write/limit", "centre/limit", "peak RSS MB", "file MB"], rows)
        for name, data in result["formats"].items():
            if data["rss_growth_mb"] is not None:
                sizes = data["sizes"]
                text += (f"\n{name}: peak RSS growth {sizes[0]['posts']:,} -> "
                         f"{sizes[-1]['posts']:,} posts: {data['rss_growth_mb']} MB")
    if result["workers"]:
        text += ("\n\nThe tutorial's command against make run's worker (JSON export; ratios: "
                 "plain / AppWorker, target ≤ 1.2)\n")
        rows = [[f"{r['posts']:,}", fmt(r["plain_export_s"]), fmt(r["app_export_s"]),
                 fmt(r["export_ratio"]), fmt(r["plain_job_s"]), fmt(r["app_job_s"]),
                 fmt(r["job_ratio"]), fmt(r["plain_cpu_s"]), fmt(r["app_cpu_s"]),
                 fmt(r["cpu_ratio"])] for r in result["workers"]]
        text += table(["posts", "plain rq worker s", "AppWorker s", "plain/app",
                       "plain job s", "AppWorker job s", "plain/app (job)", "plain CPU s",
                       "AppWorker CPU s", "plain/app (CPU)"], rows)
        text += ("\n(s: enqueue to mail; job s: the RQ job, in its work horse; CPU s: what the "
                 "worker and its work horse used for the job)")
    return (text + f"\n(median (min–max) of {result['repeat']} runs; worker of the tables "
            f"above the last: {result['worker']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="post counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 posts, one run (smoke test)")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true",
                        help="worker warmed up as docs/performance.md proposes (3)")
    parser.add_argument("--worker", default="app", choices=["app", "plain"],
                        help="who runs the exports of the first two tables: app = make run's "
                             "AppWorker, plain = the tutorial's `rq worker microblog-tasks`")
    parser.add_argument("--skip", default="", metavar="PARTS",
                        help="comma-separated tables not to measure after the first one: "
                             + ", ".join(PARTS))
    parser.add_argument("--plot", metavar="PNG", help="also draw throughput and memory")
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else sorted(int(s) for s in args.sizes.split(",") if s.strip())
    repeat = 1 if args.quick else args.repeat
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PARTS):
        parser.error(f"--skip: unknown {', '.join(sorted(skip - set(PARTS)))}")
    result = run(sizes, repeat, args.database, args.proposed, plain=args.worker == "plain",
                 parts=tuple(p for p in PARTS if p not in skip))
    print(report(result))
    emit(NAME, result)
    if args.plot:
        from bench.plot import plot_export

        plot_export(result, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
