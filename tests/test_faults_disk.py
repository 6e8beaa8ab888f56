"""Fault: the export folder full (a tiny tmpfs) or unwritable. See docs/reliability.md."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from app.models import TaskStatus
from tests.conftest import csrf_token, login, make_user, worker_env
from tests.faults import (
    bulk_posts,
    tasks_by_user,
)

# A full or unwritable export folder; the database only records the task: CI runs
# it once (SQLite).
pytestmark = pytest.mark.once


@pytest.fixture
def tiny_mount():
    """mount(8) a filesystem of one test at a fresh directory (root only); unmounted after."""
    mounted: list[Path] = []

    def mount(*options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        point = Path(tempfile.mkdtemp(prefix="mb-mnt-"))
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                                 str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            point.rmdir()
            pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def _export_folder(kind: str, tiny_mount, tmp_path: Path) -> tuple[Path, str]:
    """An export folder that fails as `kind` says, and the reason the user must read."""
    if kind == "disk full":
        return tiny_mount("size=256k"), "The server ran out of disk space."
    if kind == "read-only":
        return tiny_mount("size=1m", "ro"), "The server could not write the export file."
    blocker = tmp_path / "not-a-folder"  # fails for root too (ENOTDIR), unlike permissions
    blocker.write_text("a regular file")
    return blocker / "exports", "The server could not write the export file."


@pytest.mark.parametrize("kind", ["disk full", "read-only", "under a file"])
def test_an_export_folder_that_cannot_take_the_file_fails_the_export_readably(
        smtp_server, app, client, tiny_mount, tmp_path, kind):
    from tests.conftest import run_worker_burst

    folder, reason = _export_folder(kind, tiny_mount, tmp_path)
    ana = make_user("ana")
    bulk_posts(ana, 10_000)  # about 600 kB of JSON: more than the 256 kB disk
    login(client, "ana")
    token = csrf_token(client, "/user/ana")
    assert client.post("/export_posts", data={"csrf_token": token}).status_code == 302
    result = run_worker_burst(env=worker_env(EXPORT_FOLDER=folder, EXPORT_BATCH_SIZE=500))
    assert result.returncode == 0, result.stderr

    task = tasks_by_user()["ana"]
    assert task.status == TaskStatus.FAILED and task.error == reason, (task.error, result.stderr)
    assert task.attempts == 1  # not retried: it would only fail again
    assert smtp_server.handler_ref.messages == []
    if folder.is_dir():
        assert [p for p in folder.rglob("*") if p.is_file()] == []  # no partial file left
    # The user reads the reason in the page's task alert and in the polled JSON.
    assert reason in client.get("/user/ana").get_data(as_text=True)
    [note] = [n["data"] for n in client.get("/notifications").get_json()
              if n["name"] == "task_progress"][-1:]
    assert note["status"] == "failed" and note["error"] == reason
