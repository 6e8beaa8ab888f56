"""The benchmarks keep working: each one runs in its tiny --quick mode, as its own process
(they start their own Redis, database, SMTP server, worker and gunicorn, and configure the
app from the environment), and prints a table and a parseable BENCH_JSON line. No timing is
asserted: these machines are shared and the figures mean nothing at this size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

# Its own SQLite and Redis whatever the matrix says: once per CI run is enough.
pytestmark = pytest.mark.once

EXPECTED_KEYS = {
    "export": {"machine", "repeat", "sizes", "rss_growth_mb", "formats", "targets"},
    "imports": {"machine", "sizes", "rss_growth_mb", "ratio", "pages"},
    "download": {"machine", "posts", "file_mb", "results", "targets"},
    "dispatch": {"machine", "tasks", "bare_jobs_per_s", "app_jobs_per_s", "ratio", "target"},
    "queues": {"machine", "jobs_per_s", "pool_over_plain", "latency", "reset_mail", "mails",
               "rss", "export", "target"},
    "pages": {"machine", "connections", "duration_s", "variants", "targets", "streams"},
    "latency": {"machine", "push", "page_poll", "lost", "out_of_order", "target"},
    "burst": {"machine", "rounds", "page_p99_ms", "ok"},
    "api": {"machine", "duration_s", "connections", "costs", "pollers", "poll_ratio",
            "targets"},
    "soak": {"machine", "by_kind", "requests", "rss_mb", "rss_bound_mb", "stuck_tasks",
             "problems"},
}


def bench_environment() -> dict:
    # Each benchmark sets its own configuration; none of the test run's may leak in.
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "MICROBLOG_INSTANCE", "MAIL_SERVER",
                        "MAIL_PORT", "MAIL_RETRY_INTERVALS", "TASK_HEARTBEAT_GRACE",
                        "WORKER_CPU_PRIORITY"}}
    env["PATH"] = str(os.path.dirname(sys.executable)) + os.pathsep + env.get("PATH", "")
    return env


def bench_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("BENCH_JSON ")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0][len("BENCH_JSON "):])


@pytest.mark.timeout(900)
def test_every_benchmark_runs_quick_and_prints_its_figures():
    # All at once: each alone takes 5-20 s (the soak about 45 s: 15 s of traffic), mostly waiting
    # on its own processes; on a machine busy with other work, minutes.
    procs = {name: subprocess.Popen([sys.executable, "-m", "bench", name, "--quick"],
                                    cwd=ROOT, env=bench_environment(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in EXPECTED_KEYS}
    outputs = {}
    deadline = time.monotonic() + 780
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # its own cleanup runs on SIGTERM
                proc.terminate()
                proc.wait(30)

    for name, (returncode, stdout, stderr) in outputs.items():
        assert returncode == 0, f"{name} failed:\n{stdout}\n{stderr[-3000:]}"
        data = bench_json(stdout)
        assert data["bench"] == name
        assert EXPECTED_KEYS[name] <= data.keys(), (name, sorted(data))
        assert data["machine"]["nproc"] >= 1
    # A look inside each: the figures the docs quote are there and are numbers.
    export = bench_json(outputs["export"][1])
    [size] = export["sizes"]
    assert size["posts"] == 200
    assert size["export_posts_per_s"]["median"] > 0 and size["peak_rss_mb"]["median"] > 0
    assert set(export["formats"]) == {"json", "csv", "activitystreams"}
    for fmt_name, figures in export["formats"].items():
        [fmt_size] = figures["sizes"]
        assert fmt_size["task_s"]["median"] > 0 and fmt_size["file_mb"] > 0, fmt_name
    imports = bench_json(outputs["imports"][1])
    assert {size["source"] for size in imports["sizes"]} == {"json", "mastodon"}
    for size in imports["sizes"]:  # every post arrived, through the preview and the import
        assert size["imported"] == size["posts"] == 200 and size["import_s"] > 0, size
    assert imports["pages"]["importing"]["p99_ms"] > 0 and imports["pages"]["errors"] == 0
    dispatch = bench_json(outputs["dispatch"][1])
    assert dispatch["tasks"] == 50 and dispatch["ratio"]["median"] > 0
    queues = bench_json(outputs["queues"][1])
    assert all(figures["median"] > 0 for figures in queues["jobs_per_s"].values())
    assert queues["reset_mail"]["with_pool_s"] > 0 and queues["mails"]["ratio"] > 0
    assert queues["rss"]["rss_max_mb"] > 0 and queues["latency"]["bare"]["p99_ms"] >= 0
    pages = bench_json(outputs["pages"][1])
    busy = pages["variants"]["priority_idle"]  # WORKER_CPU_PRIORITY's default, --quick's one
    assert busy["idle"]["home"]["rps"]["median"] > 0
    assert busy["busy"]["notifications"]["p99_ms"]["median"] > 0
    # two exports timed, or their progress when the time ran out (jobs at a low priority
    # crawl on a machine that others keep busy)
    hammered = busy["export_time"]["web_hammered"]
    assert (hammered["s"] or 0) > 0 or hammered["progress_at_cap"] is not None
    streams = pages["streams"]
    # the web processes held every stream while the page was measured
    assert 0 < streams["streams"] <= sum(streams["streams_per_web_process"])
    assert streams["ended_by_server"] == 0 and streams["home"]["open"]["p99_ms"]["median"] > 0
    assert streams["rss_mb"]["open"] > 0 and streams["pss_mb"]["open"] > 0
    latency = bench_json(outputs["latency"][1])
    # both exports' events reached every stream, none lost or out of order
    assert latency["push"]["from_publish"]["n"] >= 2 * latency["streams_per_user"]
    assert latency["lost"] == latency["duplicated"] == latency["out_of_order"] == 0
    [burst] = bench_json(outputs["burst"][1])["rounds"]
    assert burst["tasks"] == burst["mails"] == burst["users_with_one_mail"] == 10
    assert burst["status_5xx"] == 0 and burst["page"]["p99_ms"] > 0
    api = bench_json(outputs["api"][1])
    # every kind of request was answered as expected (304s with the ETag), and every client
    # polled its export: a 200 first, then 304s
    for kind, costs in api["costs"].items():
        assert costs["rps"]["median"] > 0 and costs["errors"]["max"] == 0, kind
    [pollers] = api["pollers"]
    assert pollers["pollers"]["errors"] == 0 and pollers["errors"] == 0
    assert pollers["pollers"]["statuses"]["200"] == pollers["clients"] == 50
    assert pollers["home_polled"]["p99_ms"]["median"] > 0
    soak = bench_json(outputs["soak"][1])
    # every kind of request was sent, none failed, no task was left behind, and the soak
    # checked its memory bound (its exit status, asserted above, says it held)
    assert set(soak["by_kind"]) == {"home", "explore", "profile", "messages",
                                    "notifications", "post", "message", "export"}
    assert soak["requests"]["count"] > 100 and soak["requests"]["errors"] == 0
    assert soak["stuck_tasks"] == 0 and soak["problems"] == []
    assert soak["exports_finished"] == soak["mails"] > 0
    assert soak["rss_mb"]["web"]["max"] > 0 and soak["rss_mb"]["worker"]["max"] > 0


@pytest.mark.timeout(900)
def test_peers_benchmark_compares_with_the_tutorial_app_or_says_why_not():
    # On its own: it first installs the tutorial's app into a virtual environment of its own
    # (15-20 s). Where ../shared/peers is absent it must say it skipped, and still succeed.
    from bench.peers import PEER, peers_dir

    proc = subprocess.run([sys.executable, "-m", "bench", "peers", "--quick"], cwd=ROOT,
                          env=bench_environment(), capture_output=True, text=True, timeout=780)
    assert proc.returncode == 0, f"peers failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    data = bench_json(proc.stdout)
    assert data["bench"] == "peers"
    if not (peers_dir() / PEER).is_dir():
        assert "peers: skipped:" in proc.stdout and "is absent" in data["skipped"]
        return
    assert {"machine", "gunicorn", "data", "changes_to_theirs", "pages", "exports", "dispatch",
            "targets", "met"} <= data.keys()
    # the same data in both, and their export's sleep removed, said so
    assert data["data"]["post"] == 20 * 10 + 50 + 200
    assert any("time.sleep(5)" in change for change in data["changes_to_theirs"])
    for connections in ("4", "16"):
        for page in ("home", "explore", "notifications"):
            figures = data["pages"][connections][page]
            assert figures["ours_rps"]["median"] > 0 and figures["theirs_rps"]["median"] > 0
            assert figures["ours_errors"]["max"] == 0
    assert [e["posts"] for e in data["exports"]] == [50, 200]
    for export in data["exports"]:
        assert export["ours_s"]["median"] > 0 and export["theirs_s"]["median"] > 0
    assert data["dispatch"]["ours_jobs_per_s"]["median"] > 0
    assert data["dispatch"]["theirs_jobs_per_s"]["median"] > 0


def test_a_figure_that_could_not_be_measured_prints_as_missing():
    # e.g. a peak RSS when the worker's wrapper was killed before it could write it: the
    # quick run goes on and says n/a, where it used to stop with a TypeError
    from bench.harness import number

    assert number(None) == number(float("nan")) == "n/a"
    assert number(69.74, 0) == "70" and number(0.123) == "0.12"
