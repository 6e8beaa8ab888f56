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
from tests.test_bench_smoke import bench_environment, bench_json

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
        cwd=ROOT, env=bench_environment(), capture_output=True, text=True, timeout=840)
    assert "BENCH_JSON " in proc.stdout, proc.stderr[-3000:]
    [burst] = bench_json(proc.stdout)["rounds"]
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


def _burst_round(**changes) -> dict:
    round_ = {"users": USERS, "presses": 2 * USERS, "tasks": USERS,
              "task_states": {"finished": USERS}, "refused_presses": USERS,
              "users_refused": USERS, "mails": USERS, "users_with_one_mail": USERS,
              "mails_to_others": 0, "wrong_mails": 0, "status_5xx": 0, "unexpected": 0,
              "first_errors": []}
    return {**round_, **changes}


def test_burst_fails_on_a_duplicate_export_or_mail_or_a_5xx():
    from bench.burst import check

    assert check(_burst_round()) == []
    duplicate = check(_burst_round(tasks=USERS + 1, task_states={"finished": USERS + 1},
                                   refused_presses=USERS - 1, users_refused=USERS - 1))
    assert any("51 export tasks" in p for p in duplicate)
    assert check(_burst_round(mails=USERS + 1, users_with_one_mail=USERS - 1))
    assert check(_burst_round(mails_to_others=1))
    assert check(_burst_round(status_5xx=1, unexpected=1, first_errors=["HTTP 500"]))


def test_soak_fails_when_memory_grows_past_its_bound_or_a_task_is_stuck():
    from bench.soak import check

    def result(**changes) -> dict:
        memory = {"growth": 1.0}
        return {"requests": {"errors": 0, "status_5xx": 0}, "first_errors": [],
                "web_worker_deaths": 0, "stuck_tasks": 0, "failed_tasks": 0, "tasks": {},
                "grace_s": 90, "mail_mismatches": 0, "mails": 3, "exports_finished": 3,
                "rss_mb": {"web": memory, "worker": memory}, "rss_bound_mb": 50, **changes}

    assert check(result()) == []
    [problem] = check(result(rss_mb={"web": {"growth": 1.0}, "worker": {"growth": 64.0}}))
    assert "worker RSS grew 64.0 MB (bound 50 MB)" in problem
    assert check(result(stuck_tasks=1, tasks={"running": 1}))
    assert check(result(mail_mismatches=1))
    assert check(result(requests={"errors": 1, "status_5xx": 1}))
