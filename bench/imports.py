"""Import throughput and memory: an archive uploaded as the page uploads it
(`app.imports.actions.start_import`), previewed and then imported by a real worker started as
`make run` starts it, against the limit measured in the same run: the same rows inserted
into the same database with one `executemany` per batch in one transaction (no archive to
read, no queue, no checks).

For each source (our posts.json, a Mastodon archive) and each size: the preview's time
(upload to "ready"), the import's time (confirm to the finished task), posts per second,
the limit's time and the ratio limit / import (target >= 0.5), and the worker's peak RSS (a
fresh worker for each import, so wait4() gives that import's peak: the worker and its work
horse). Memory is flat when the peak at the largest size is within 64 MB of the smallest.

Then the pages while an import runs: the home page's p99 under a closed loop of a few
connections, idle and while an import of the largest Mastodon archive runs (target
<= 1.5 x idle), as `bench export` measures exports.

    python -m bench imports [--sizes 10000,100000,1000000] [--sources json,mastodon]
                            [--quick] [--database sqlite|postgresql] [--skip sizes,pages]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

from bench.harness import (
    FILLER,
    Services,
    create_user,
    emit,
    login,
    number,
    run_load,
    say,
    summary,
    table,
    wait_until,
)

NAME = "imports"
AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
START = datetime(2020, 1, 1)
PAGE_CONNECTIONS = 4


# --------------------------------------------------------------------------- archives

def post_text(i: int) -> str:
    """The i-th post's text: lengths from short notes to a few hundred characters."""
    return f"Post {i} of the import benchmark. " + FILLER[(i * 7) % 60:(i * 7) % 60 + 10 + (
        i * 13) % 200]


def post_time(i: int) -> datetime:
    return START + timedelta(seconds=37 * i)


def write_posts_json(path: Path, count: int, username: str) -> None:
    """Our posts.json (app/exports/formats.py write_json), oldest first."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps({"format": "microblog-posts", "version": 1, "user": username,
                              "exported_at": "2026-01-01T00:00:00Z"})[:-1] + ', "posts": [')
        for i in range(count):
            out.write(("\n" if i == 0 else ",\n") + (
                f'{{"id": {i + 1}, "body": {encode(post_text(i))}, '
                f'"timestamp": "{post_time(i).isoformat()}Z", "language": "en"}}'))
        out.write("\n]}\n")


def write_mastodon_archive(path: Path, count: int, username: str) -> None:
    """A Mastodon archive as its exporter writes it: outbox.json, an OrderedCollection of
    Create activities of public Notes with HTML content, and actor.json."""
    actor = f"https://mastodon.example/users/{username}"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        archive.writestr("actor.json", json.dumps({
            "@context": "https://www.w3.org/ns/activitystreams", "id": actor,
            "type": "Person", "preferredUsername": username, "name": username}))
        with archive.open("outbox.json", "w", force_zip64=True) as raw:
            raw.write(json.dumps({
                "@context": "https://www.w3.org/ns/activitystreams", "id": "outbox.json",
                "type": "OrderedCollection", "totalItems": count})[:-1].encode()
                + b', "orderedItems": [')
            for i in range(count):
                status = f"{actor}/statuses/{100000 + i}"
                published = post_time(i).isoformat() + "Z"
                text = post_text(i).replace("&", "&amp;").replace("<", "&lt;").replace(
                    ">", "&gt;").replace('"', "&quot;")
                html = f"<p>{text}</p>"
                activity = {
                    "id": f"{status}/activity", "type": "Create", "actor": actor,
                    "published": published, "to": [AS_PUBLIC], "cc": [f"{actor}/followers"],
                    "object": {
                        "id": status, "type": "Note", "summary": None, "inReplyTo": None,
                        "published": published, "url": f"https://mastodon.example/@{username}"
                        f"/{100000 + i}", "attributedTo": actor, "to": [AS_PUBLIC],
                        "cc": [f"{actor}/followers"], "sensitive": False, "content": html,
                        "contentMap": {"en": html}, "attachment": [], "tag": []}}
                raw.write((b"" if i == 0 else b",") + json.dumps(activity).encode())
            raw.write(b"]}")


WRITERS = {"json": (write_posts_json, "posts.json"),
           "mastodon": (write_mastodon_archive, "archive.zip")}


# --------------------------------------------------------------------------- one import

def _import_row(import_id: str):
    from app import db
    from app.models import Import

    db.session.rollback()
    return db.session.get(Import, import_id)


def real_import(services: Services, user_id: int, archive: Path, filename: str,
                timeout: float) -> dict:
    """Upload, preview, confirm, import, through a fresh worker. Seconds of the preview
    (upload to "ready") and of the import (confirm to finished), and the worker's peak RSS."""
    from werkzeug.datastructures import FileStorage

    from app import db
    from app.imports import actions
    from app.models import Import, User

    worker = services.start_worker()
    try:
        user = db.session.get(User, user_id)
        started = time.perf_counter()
        with open(archive, "rb") as stream:
            imp = actions.start_import(user, FileStorage(stream, filename=filename))
        import_id = imp.id

        def reached(*statuses: str) -> Import | None:
            worker.check_alive()
            row = _import_row(import_id)
            if row.status in statuses:
                return row
            if row.status in ("failed", "cancelled", "expired"):
                raise RuntimeError(f"import {import_id} {row.status}: "
                                   f"{row.task and row.task.error}\n{worker.log_tail()}")
            return None

        wait_until(lambda: reached(Import.READY), timeout, "the preview", interval=0.05)
        preview_s = time.perf_counter() - started
        row = _import_row(import_id)
        started = time.perf_counter()
        actions.confirm_import(row)
        row = wait_until(lambda: reached(Import.FINISHED), timeout, "the import",
                         interval=0.05)
        import_s = time.perf_counter() - started
        imported = row.imported
    finally:
        worker.stop()
    return {"preview_s": preview_s, "import_s": import_s, "imported": imported,
            "peak_rss_mb": worker.peak_rss_mb}


def limit_insert(user_id: int, archive: Path, batch_size: int) -> tuple[float, int]:
    """The limit: the archive's rows, prepared beforehand (not timed), inserted with one
    executemany per batch in one transaction. Returns (seconds, rows)."""
    import sqlalchemy as sa

    from app import db
    from app.imports import importer
    from app.imports.identity import origin_key
    from app.imports.readers import ArchivePost, open_archive
    from app.models import Post

    with open_archive(str(archive)) as opened:
        origin = opened.origin
        rows = [importer.post_row(user_id, origin, item, origin_key(origin, item))
                for item in opened.items() if isinstance(item, ArchivePost)]
    statement = sa.insert(Post.__table__)
    started = time.perf_counter()
    with db.engine.begin() as conn:
        for at in range(0, len(rows), batch_size):
            conn.execute(statement, rows[at:at + batch_size])
    return time.perf_counter() - started, len(rows)


# --------------------------------------------------------------------------- pages

def pages_while_importing(services: Services, size: int, timeout: float,
                          duration: float) -> dict:
    """The home page's p99 idle, then while a Mastodon archive of `size` posts imports."""
    from werkzeug.datastructures import FileStorage

    from app import db
    from app.imports import actions
    from app.models import Import, User

    reader = create_user("pages_reader")
    importer_user = create_user("pages_importer")
    archive = services.tmp / "pages-archive.zip"
    write_mastodon_archive(archive, size, importer_user.username)
    web = services.start_web()
    # As the import runs for a user: at WORKER_CPU_PRIORITY's default, pages before jobs (the
    # other figures run jobs at normal priority, to measure what the code costs).
    worker = services.start_worker(WORKER_CPU_PRIORITY="idle")
    try:
        cookie = login(web.port, reader.username)
        idle = run_load(web.port, "/", cookie, PAGE_CONNECTIONS, duration)
        with open(archive, "rb") as stream:
            imp = actions.start_import(db.session.get(User, importer_user.id),
                                      FileStorage(stream, filename="archive.zip"))
        import_id = imp.id
        wait_until(lambda: _import_row(import_id).status == Import.READY, timeout,
                   "the preview", interval=0.05)
        actions.confirm_import(_import_row(import_id))
        wait_until(lambda: _import_row(import_id).position > 0, timeout,
                   "the import's first batch", interval=0.02)
        busy = run_load(web.port, "/", cookie, PAGE_CONNECTIONS, duration)
        still_running = _import_row(import_id).status == Import.IMPORTING
    finally:
        worker.stop()
    idle_p99, busy_p99 = idle.percentile_ms(99), busy.percentile_ms(99)
    return {"posts": size, "idle": {"p99_ms": round(idle_p99, 1), "rps": round(idle.rps, 1)},
            "importing": {"p99_ms": round(busy_p99, 1), "rps": round(busy.rps, 1),
                          "import_still_running_at_end": still_running},
            "errors": idle.errors + busy.errors,
            "p99_ratio": round(busy_p99 / idle_p99, 2) if idle_p99 else None}


# --------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench imports")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sources", default="json,mastodon")
    parser.add_argument("--quick", action="store_true", help="200 posts, one source each")
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--skip", default="", help="sizes,pages")
    parser.add_argument("--pages-posts", type=int, default=100_000)
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    sources = args.sources.split(",")
    skip = set(filter(None, args.skip.split(",")))
    pages_posts = 2000 if args.quick else args.pages_posts
    duration = 1.5 if args.quick else 15.0

    # A million posts of our JSON outgrow the default upload limit (100 MB): the benchmark
    # measures the import, not the limit.
    os.environ.setdefault("IMPORT_MAX_BYTES", str(4 * 1024**3))
    results: dict = {"sizes": [], "machine": None}
    with Services(NAME, database=args.database) as services:
        from app import db

        results["machine"] = services.machine()
        batch_size = services.app.config["IMPORT_BATCH_SIZE"]
        rows = []
        # A fresh worker for each import, and the web only for the pages: nothing else runs.
        for source in sources if "sizes" not in skip else ():
            write, filename = WRITERS[source]
            for size in sizes:
                user = create_user(f"imp_{source}_{size}", password=None)
                archive = services.tmp / f"{source}-{size}-{filename}"
                say(f"{source}, {size:,} posts: writing the archive")
                write(archive, size, user.username)
                timeout = 600 + size / 200
                say(f"{source}, {size:,} posts: preview and import")
                archive_mb = round(archive.stat().st_size / 1e6, 1)
                measured = real_import(services, user.id, archive, filename, timeout)
                limit_user = create_user(f"lim_{source}_{size}", password=None)
                limit_s, limit_rows = limit_insert(limit_user.id, archive, batch_size)
                db.session.remove()
                archive.unlink()
                entry = {
                    "source": source, "posts": size, "archive_mb": archive_mb,
                    "preview_s": round(measured["preview_s"], 3),
                    "import_s": round(measured["import_s"], 3),
                    "imported": measured["imported"],
                    "import_posts_per_s": round(size / measured["import_s"], 1),
                    "limit_s": round(limit_s, 3), "limit_rows": limit_rows,
                    "ratio": round(limit_s / measured["import_s"], 3),
                    "peak_rss_mb": (round(measured["peak_rss_mb"], 1)
                                    if measured["peak_rss_mb"] is not None else None)}
                results["sizes"].append(entry)
                rows.append([source, f"{size:,}", number(entry["preview_s"]),
                             number(entry["import_s"]), f"{entry['import_posts_per_s']:,.0f}",
                             number(entry["limit_s"]), number(entry["ratio"]),
                             number(entry["peak_rss_mb"], 1)])
                if measured["imported"] != size:
                    raise SystemExit(f"{source}: imported {measured['imported']} of {size}")
        growth = {}
        for source in sources:
            peaks = [e["peak_rss_mb"] for e in results["sizes"] if e["source"] == source]
            if len(peaks) > 1 and None not in peaks:
                growth[source] = round(peaks[-1] - peaks[0], 1)
        results["rss_growth_mb"] = growth
        results["ratio"] = summary([e["ratio"] for e in results["sizes"]])
        if "pages" not in skip:
            say(f"pages while a {pages_posts:,}-post Mastodon archive imports")
            results["pages"] = pages_while_importing(
                services, pages_posts, timeout=600 + pages_posts / 200, duration=duration)

    print(table(["source", "posts", "preview s", "import s", "posts/s", "limit s",
                 "limit/import", "peak RSS MB"], rows))
    for source, grown in growth.items():
        print(f"{source}: worker peak RSS grew {grown} MB from the smallest to the largest "
              "size (target < 64)")
    if "pages" in results:
        pages = results["pages"]
        print(f"home page p99 idle {pages['idle']['p99_ms']} ms, while importing "
              f"{pages['importing']['p99_ms']} ms: {pages['p99_ratio']} x (target <= 1.5)")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
