"""Download of a large export: the posts.json of a user with 1,000,000 posts (written by the
real export writer, formats.write_export) served by gunicorn as `make run` starts it
(gunicorn.conf.py, one worker) through app/exports/download.py, read by a local HTTP client;
against the limit measured in the same run: `cat` of the same file into the same reader
through a pipe. Figures: throughput of each and their ratio, and the gunicorn worker's RSS
before and its peak (VmHWM) after the downloads, which must stay flat whatever the file size.

A pipe hands its reader at most 64 KB a read where loopback TCP hands up to 1 MB, so the local
download can beat `cat` (a ratio above 1): read it as "serving adds nothing measurable to
reading the file", not as a speed-up. The first full run (2 cores shared with other work,
1,000,000 posts, 232 MB): local 692 MB/s, 1.32x cat; S3 (moto) 265 MB/s, 0.35x; the web
worker's peak RSS rose by 0.8 MB with either.

Storage backends: `local` (the file in EXPORT_FOLDER) and `s3` (the file in a bucket of
moto's S3 server, a local process: the figure then includes moto, which is much slower than
a real store; the memory figure is the point there).

The app is create_app() plus one bench-only route serving the file with download_response
(the route of the export pages needs a logged-in owner; what it adds is a database lookup).

    python -m bench download [--posts 1000000] [--repeat 3] [--storage local,s3] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import (
    BIN,
    Process,
    Services,
    WebServer,
    add_posts,
    create_user,
    emit,
    fmt,
    free_port,
    say,
    status_kb,
    summary,
    table,
    wait_until,
    web_command,
)

NAME = "download"
KEY = "1/bench/posts.json"
READ_SIZE = 2**20
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def bench_app():
    """The WSGI app gunicorn serves here: the real app plus GET /bench/download."""
    from app import create_app
    from app.exports.download import download_response
    from app.exports.storage import get_storage

    app = create_app()

    def download():
        return download_response(get_storage(), KEY, "posts.json", "application/json")

    app.add_url_rule("/bench/download", "bench_download", download)
    return app


class DownloadWeb(WebServer):
    """gunicorn with gunicorn.conf.py serving bench_app(), one worker (so its memory is the
    one to read)."""

    def __init__(self, env: dict, log: Path) -> None:
        self.port = free_port()
        args = [str(BIN / "gunicorn") if arg == "gunicorn" else
                "bench.download:bench_app()" if arg == "microblog:app" else arg
                for arg in web_command()]
        env = dict(env, GUNICORN_BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY="1",
                   GUNICORN_ACCESS_LOG="")
        Process.__init__(self, args, env, log, "gunicorn")

    def worker_pid(self) -> int:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == self.pid:
                    return int(entry.name)
        raise RuntimeError("gunicorn has no worker process")


def make_export(services: Services, posts: int, path: Path) -> int:
    """posts.json of a user with `posts` posts, by the real writer; returns posts written."""
    from app.exports.formats import write_export

    user = create_user("downloader", password=None)
    started = time.perf_counter()
    add_posts(user.id, posts)
    say(f"download: {posts:,} posts generated in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        written = write_export("json", user, out)
    say(f"download: posts.json written ({path.stat().st_size / 2**20:.0f} MB) in "
        f"{time.perf_counter() - started:.1f} s")
    return written


def read_http(port: int) -> tuple[int, float, str]:
    """GET /bench/download, read in 1 MB pieces: (bytes, seconds, Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("GET", "/bench/download")
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"download answered {response.status}: {response.read()[:500]!r}")
    received = 0
    while piece := response.read(READ_SIZE):
        received += len(piece)
    seconds = time.perf_counter() - started
    conn.close()
    return received, seconds, response.getheader("Content-Length", "")


def read_cat(path: Path) -> tuple[int, float]:
    """The limit: `cat` of the file into this process through a pipe, read the same way."""
    started = time.perf_counter()
    proc = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE, bufsize=0)
    received = 0
    while piece := proc.stdout.read(READ_SIZE):
        received += len(piece)
    proc.wait()
    return received, time.perf_counter() - started


def sha256_of_download(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/bench/download")
    response = conn.getresponse()
    digest = hashlib.sha256()
    while piece := response.read(READ_SIZE):
        digest.update(piece)
    conn.close()
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


def start_moto(services: Services) -> str:
    port = free_port()
    proc = Process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   services.env(), services.tmp / "moto.log", "moto server")
    services.processes.append(proc)

    def listening() -> bool:
        proc.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(listening, 120, "moto's S3 server")
    return f"http://127.0.0.1:{port}"


def storage_env(services: Services, backend: str, path: Path) -> dict:
    """The environment of a web process serving `path` from `backend` (uploaded there)."""
    if backend == "local":
        return {"EXPORT_STORAGE": "local", "EXPORT_FOLDER": str(path.parents[2])}
    from app.exports.storage import S3Storage

    endpoint = start_moto(services)
    os.environ.update(S3_CREDENTIALS)
    storage = S3Storage("bench-exports", services.tmp / "uploads", prefix="exports/",
                        endpoint_url=endpoint, region="us-east-1")
    storage.client.create_bucket(Bucket="bench-exports")
    started = time.perf_counter()
    with storage.writer(KEY) as out, open(path, "rb") as f:
        while piece := f.read(READ_SIZE):
            out.write(piece)
    say(f"download: uploaded to moto in {time.perf_counter() - started:.1f} s")
    return {"EXPORT_STORAGE": "s3", "EXPORT_S3_BUCKET": "bench-exports",
            "EXPORT_S3_ENDPOINT_URL": endpoint, "EXPORT_S3_REGION": "us-east-1",
            "EXPORT_S3_PREFIX": "exports/", "EXPORT_FOLDER": str(services.tmp / "uploads"),
            **S3_CREDENTIALS}


def measure(services: Services, backend: str, path: Path, repeat: int) -> dict:
    size = path.stat().st_size
    web = DownloadWeb(services.env(**storage_env(services, backend, path)),
                      services.tmp / f"gunicorn-{backend}.log")
    services.processes.append(web)
    try:
        web.wait_ready()
        if sha256_of_download(web.port) != sha256_of_file(path):  # also warms the worker up
            raise RuntimeError(f"{backend}: the download differs from the file")
        worker = web.worker_pid()
        rss_before_kb = status_kb(worker, "VmRSS") or 0
        hwm_before_kb = status_kb(worker, "VmHWM") or 0
        runs = []
        for rep in range(repeat):
            cat_bytes, cat_s = read_cat(path)
            got, http_s, length = read_http(web.port)
            if got != size or cat_bytes != size or length != str(size):
                raise RuntimeError(f"{backend}: got {got} bytes over HTTP (Content-Length "
                                   f"{length}), {cat_bytes} from cat; the file has {size}")
            runs.append({"http_s": http_s, "cat_s": cat_s})
            say(f"download: {backend}, run {rep + 1}/{repeat}: HTTP {size / http_s / 2**20:.0f}"
                f" MB/s, cat {size / cat_s / 2**20:.0f} MB/s")
        hwm_after_kb = status_kb(worker, "VmHWM") or 0
    finally:
        web.stop()
        services.processes.remove(web)
    mb = size / 2**20
    return {
        "storage": backend,
        "http_mb_per_s": summary([mb / r["http_s"] for r in runs], 1),
        "cat_mb_per_s": summary([mb / r["cat_s"] for r in runs], 1),
        # each run's download against the cat measured right before it
        "ratio": summary([r["cat_s"] / r["http_s"] for r in runs]),
        "web_rss_before_mb": round(rss_before_kb / 1024, 1),
        "web_peak_rss_mb": round(hwm_after_kb / 1024, 1),
        # how much the downloads raised the worker's peak (0: not above its earlier peak)
        "web_peak_growth_mb": round(max(0, hwm_after_kb - max(hwm_before_kb, rss_before_kb))
                                    / 1024, 1),
    }


def run(posts: int, repeat: int, backends: list[str]) -> dict:
    with Services(NAME) as services:
        from bench.harness import machine_info

        path = Path(services.app.config["EXPORT_FOLDER"]) / KEY
        written = make_export(services, posts, path)
        results = [measure(services, backend, path, repeat) for backend in backends]
        return {"machine": machine_info(), "posts": written, "repeat": repeat,
                "file_mb": round(path.stat().st_size / 2**20, 1), "results": results,
                "targets": {"web_peak_growth_max_mb": 16}}


def report(result: dict) -> str:
    rows = [[r["storage"], fmt(r["http_mb_per_s"], digits=0), fmt(r["cat_mb_per_s"], digits=0),
             fmt(r["ratio"]), f"{r['web_rss_before_mb']:.0f}", f"{r['web_peak_rss_mb']:.0f}",
             f"{r['web_peak_growth_mb']:.1f}"]
            for r in result["results"]]
    text = table(["storage", "download MB/s", "cat MB/s", "download/cat", "web RSS MB",
                  "web peak MB", "peak growth MB"], rows)
    return (text + f"\n{result['posts']:,} posts, posts.json {result['file_mb']} MB "
            f"(median (min–max) of {result['repeat']} runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--storage", default="local,s3", help="local, s3 or both")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 posts, one run (smoke test)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.storage.split(",") if b.strip()]
    if not set(backends) <= {"local", "s3"}:
        parser.error("--storage takes local, s3 or local,s3")
    if args.quick:
        args.posts, args.repeat = 5_000, 1
    result = run(args.posts, args.repeat, backends)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
