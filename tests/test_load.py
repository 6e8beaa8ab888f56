"""Load, as a user would meet it: 50 users each press "Export your posts" twice at the same
moment, against gunicorn and 2 RQ workers started as `make run` starts them, with a real SMTP
server (bench/burst.py does the work, in its own process: it configures the app from the
environment). Counts are asserted, never timings: the page p99 is printed for the record."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_bench_smoke import _bench_json, _environment

USERS = 50


def _database_option() -> list[str]:
    # The database the suite runs on (CI: PostgreSQL, MariaDB): the bench migrates and
    # empties it, as the suite's own fixtures do.
    url = os.environ.get("MICROBLOG_TEST_DATABASE_URL")
    return ["--database", url] if url else []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fifty_users_pressing_export_twice_at_once_get_one_export_and_one_mail_each():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "burst", "--users", str(USERS), "--repeat", "1",
         *_database_option()],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=840)
    assert "BENCH_JSON " in proc.stdout, proc.stderr[-3000:]
    [burst] = _bench_json(proc.stdout)["rounds"]
    print(f"\nexport burst, {USERS} users x 2 presses, 2 workers: page p99 "
          f"{burst['page']['p99_ms']} ms over {burst['page']['count']} pages, press p99 "
          f"{burst['press']['p99_ms']} ms, last mail after {burst['last_mail_s']} s")

    assert burst["presses"] == 2 * USERS
    assert burst["tasks"] == USERS, burst["task_states"]
    assert burst["task_states"] == {"finished": USERS}
    # the second press of every user was told an export is running
    assert burst["refused_presses"] == USERS and burst["users_refused"] == USERS
    assert burst["mails"] == USERS
    assert burst["users_with_one_mail"] == USERS and burst["mails_to_others"] == 0
    assert burst["wrong_mails"] == 0  # each is the export mail with its posts.json
    assert burst["status_5xx"] == 0, burst["first_errors"]
    assert burst["unexpected"] == 0, burst["first_errors"]
    assert proc.returncode == 0, proc.stdout[-3000:]
