"""A real gunicorn (gunicorn.conf.py: the gevent worker, as `make run` and the Procfile run it)
for tests that need what only the production server shows: its worker processes' memory, its
connection slots. Raw-socket helpers send what `requests` will not (a body the server refuses
while it is still being sent)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import CSRF, ROOT, stop_process, wait_for, worker_env


@dataclass
class Gunicorn:
    base: str
    port: int
    arbiter: subprocess.Popen

    def worker_pids(self) -> list[int]:
        path = Path(f"/proc/{self.arbiter.pid}/task/{self.arbiter.pid}/children")
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def log_in(self, username: str, password: str = "correct horse battery"
               ) -> requests.Session:
        """A session logged in through the server's own login form."""
        session = requests.Session()
        page = session.get(f"{self.base}/auth/login", timeout=30).text
        match = CSRF.search(page)
        response = session.post(f"{self.base}/auth/login", allow_redirects=False, timeout=60,
                                data={"username": username, "password": password,
                                      "csrf_token": match.group(1) or match.group(2)})
        assert response.status_code == 302, response.text
        return session


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=10).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def gunicorn(**env) -> Iterator[Gunicorn]:
    """gunicorn -c gunicorn.conf.py microblog:app, one worker unless WEB_CONCURRENCY says."""
    port = _free_port()
    env.setdefault("WEB_CONCURRENCY", 1)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py",
         "microblog:app"],
        cwd=ROOT, env=worker_env(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_ACCESS_LOG="",
                                 **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}", port, proc)
    try:
        wait_for(lambda: proc.poll() is None and _healthy(server.base), timeout=90,
                 message="gunicorn's /health")
        wait_for(lambda: len(server.worker_pids()) == int(env["WEB_CONCURRENCY"]), timeout=30,
                 message="gunicorn's workers")
        yield server
    finally:
        # SIGKILL after a short grace: open streams would hold a graceful stop.
        stop_process(proc, grace=10)


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A field of /proc/<pid>/status in KiB: VmHWM is the peak resident size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def send_body(port: int, path: str, head: dict[str, str], body: Iterator[bytes],
              chunked: bool, timeout: float = 60, raw: bytes | None = None) -> tuple[int, str]:
    """POST `body` (bytes from an iterator, never all in memory) and return (status, response
    text) as soon as the server answers, even if it answers before the body is all sent (the
    sender then stops: the server is not obliged to read the rest). `raw`: a chunked body
    sent as it is, well-formed or not."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    headers = dict(head, Host=f"127.0.0.1:{port}", Connection="close")
    if chunked or raw is not None:
        headers["Transfer-Encoding"] = "chunked"
    if raw is not None:
        body, chunked = iter([raw]), False
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    answered = threading.Event()

    def send() -> None:
        try:
            for piece in body:
                if answered.is_set():
                    return
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: what a refusal may do
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        answered.set()
        head_text, _, rest = received.partition(b"\r\n\r\n")
        status = int(head_text.split(b" ", 2)[1])
        try:
            while len(rest) < 65536 and (data := sock.recv(65536)):
                rest += data
        except OSError:
            pass
        return status, rest.decode(errors="replace")
    finally:
        answered.set()
        sender.join(timeout=timeout)
        sock.close()


def repeated(piece: bytes, total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes of `piece` repeated, in blocks of `size`."""
    block = (piece * (size // len(piece) + 1))[:size]
    sent = 0
    while sent < total:
        yield block[:total - sent]
        sent += len(block)
