"""GET /metrics (app/monitoring, app/jobs/metrics.py): who may read it, that Prometheus can parse
it, and that its figures are the operator's truth: queue depth and latency while nobody works,
counters that move as jobs run, the same totals through every gunicorn process with jobs run
by several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app import db
from app.models import Task, TaskStatus, User
from tests.conftest import (
    EVENT_TIMEOUT,
    ROOT,
    login,
    make_user,
    run_jobs_in_process,
    start_worker,
    wait_for,
    worker_env,
)
from tests.test_rate_limits import free_port

OUTSIDER = "203.0.113.5"


def scrape(client, address="127.0.0.1", **headers):
    return client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": address})


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, (sorted labels)): value} for every sample of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(figures: dict, name: str, **labels) -> float:
    return figures[(name, tuple(sorted(labels.items())))]


def make_admin(user: User) -> None:
    """The admin role comes with issue 11's admin branch (User.is_admin, from ADMINS or
    `flask users promote`); before it, an attribute on the loaded user is what /metrics reads."""
    if not isinstance(getattr(User, "is_admin", None), property):
        user.is_admin = True


# --------------------------------------------------------------------------- access

def test_anonymous_visitors_from_elsewhere_get_the_sites_404(client):
    response = scrape(client, OUTSIDER)
    assert response.status_code == 404
    assert "Not Found" in response.get_data(as_text=True)
    assert "microblog_" not in response.get_data(as_text=True)


def test_every_other_method_is_a_404_too_for_those_who_may_not_read_it(client):
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        outside = client.open("/metrics", method=method,
                              environ_base={"REMOTE_ADDR": OUTSIDER})
        assert outside.status_code == 404, method
        assert "Allow" not in outside.headers
        inside = client.open("/metrics", method=method, environ_base={"REMOTE_ADDR": "::1"})
        assert inside.status_code == (200 if method == "OPTIONS" else 405), method


def test_the_loopback_address_may_scrape_by_default(client):
    for address in ("127.0.0.1", "::1"):
        response = scrape(client, address)
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain; version=0.0.4")
        figures = samples(response.get_data(as_text=True))
        assert value(figures, "microblog_queue_depth", queue="microblog-tasks") == 0


def test_prometheus_asking_for_openmetrics_gets_it(client):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse

    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = scrape(client, Accept=accept)
    assert response.content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse(response.get_data(as_text=True))}
    assert families["microblog_jobs_started"].type == "counter"
    assert families["microblog_job_duration_seconds"].type == "histogram"


@pytest.mark.parametrize("config_overrides", [dict(METRICS_ALLOW="10.0.0.0/8, 192.0.2.7")])
def test_metrics_allow_lists_the_addresses_and_networks_that_may_scrape(client):
    assert scrape(client, "10.20.30.40").status_code == 200
    assert scrape(client, "192.0.2.7").status_code == 200
    assert scrape(client, "192.0.2.8").status_code == 404
    assert scrape(client, "127.0.0.1").status_code == 404  # the list replaces the default


@pytest.mark.parametrize("config_overrides", [dict(TRUSTED_PROXY_COUNT=1)])
def test_behind_the_proxy_the_clients_address_counts_not_the_proxys(client):
    """nginx connects from 127.0.0.1 for everyone: what counts is the address it appends."""
    def through_proxy(forwarded_for):
        return scrape(client, "127.0.0.1", **{"X-Forwarded-For": forwarded_for})

    assert through_proxy(OUTSIDER).status_code == 404
    assert through_proxy("127.0.0.1, " + OUTSIDER).status_code == 404  # a forged first hop
    assert through_proxy("127.0.0.1").status_code == 200


@pytest.mark.parametrize("config_overrides", [dict(METRICS_TOKEN="s3cret-token")])
def test_a_bearer_token_opens_it_from_anywhere(client):
    assert scrape(client, OUTSIDER, Authorization="Bearer s3cret-token").status_code == 200
    assert scrape(client, OUTSIDER, Authorization="bearer s3cret-token").status_code == 200
    assert scrape(client, OUTSIDER, Authorization="Bearer wrong").status_code == 404
    assert scrape(client, OUTSIDER, Authorization="Basic s3cret-token").status_code == 404
    assert scrape(client, OUTSIDER).status_code == 404


def test_no_token_is_set_by_default_so_an_empty_one_opens_nothing(client):
    assert scrape(client, OUTSIDER, Authorization="Bearer ").status_code == 404
    assert scrape(client, OUTSIDER, Authorization="Bearer None").status_code == 404


def test_a_signed_in_user_who_is_not_an_admin_gets_the_404(client, user):
    login(client)
    assert scrape(client, OUTSIDER).status_code == 404


@pytest.mark.parametrize("config_overrides", [dict(
    ADMINS=["boss@example.com"], ADMIN_EMAILS=["boss@example.com"])])
def test_a_signed_in_admin_may_read_it_from_anywhere(client):
    boss = make_user("boss", email="boss@example.com")
    make_admin(boss)
    login(client, "boss")
    response = scrape(client, OUTSIDER)
    assert response.status_code == 200
    assert "microblog_jobs_started_total" in response.get_data(as_text=True)


def test_a_mistyped_allow_list_stops_the_app_at_start(database):
    from app import create_app
    from tests.conftest import config_for_tests

    with pytest.raises(ValueError, match="METRICS_ALLOW"):
        create_app(config_for_tests(METRICS_ALLOW="10.0.0.0/8, not-an-address"))


# --------------------------------------------------------------------------- figures

def test_queue_depth_and_latency_grow_while_no_worker_runs(app, client):
    users = [make_user(f"user{i}") for i in range(3)]
    for user in users:
        user.launch_task("noop", "Nothing")
    figures = samples(scrape(client).get_data(as_text=True))
    assert value(figures, "microblog_queue_depth", queue="microblog-tasks") == 3
    assert value(figures, "microblog_tasks", type="noop", status="queued") == 3
    assert value(figures, "microblog_workers", state="idle") == 0

    def latency() -> float:
        figures = samples(scrape(client).get_data(as_text=True))
        return value(figures, "microblog_queue_latency_seconds", queue="microblog-tasks")
    wait_for(lambda: latency() >= 1.0, message="the oldest job to age")

    run_jobs_in_process(app)
    figures = samples(scrape(client).get_data(as_text=True))
    assert value(figures, "microblog_queue_depth", queue="microblog-tasks") == 0
    assert value(figures, "microblog_queue_latency_seconds", queue="microblog-tasks") == 0
    assert value(figures, "microblog_tasks", type="noop", status="queued") == 0


def test_counters_and_histograms_move_as_jobs_run(smtp_server, app, client):
    susan = make_user("susan", posts=["one", "two", "three"])
    other = make_user("other")
    before = samples(scrape(client).get_data(as_text=True))
    assert value(before, "microblog_jobs_started_total", type="export_posts") == 0
    susan.launch_task("noop", "Nothing")
    susan.launch_task("export_posts", "Exporting")
    other.launch_task("countdown", "Counting", "not a number")  # fails: a TypeError
    run_jobs_in_process(app)

    after = samples(scrape(client).get_data(as_text=True))
    for task_type, outcome in (("noop", "finished"), ("export_posts", "finished"),
                               ("countdown", "failed")):
        assert value(after, "microblog_jobs_started_total", type=task_type) == 1
        assert value(after, "microblog_jobs_ended_total", type=task_type, outcome=outcome) == 1
        assert value(after, "microblog_job_duration_seconds_count", type=task_type) == 1
        assert value(after, "microblog_job_duration_seconds_bucket",
                     type=task_type, le="+Inf") == 1
    assert value(after, "microblog_jobs_ended_total", type="noop", outcome="failed") == 0
    attachment = next(smtp_server.handler_ref.messages[0].iter_attachments())
    assert value(after, "microblog_export_bytes_total", format="json") == len(
        attachment.get_content())


def test_a_task_cancelled_while_queued_counts_as_cancelled_without_a_duration(app, client):
    from app.jobs import lifecycle

    task = make_user().launch_task("noop", "Nothing")
    lifecycle.end(task, TaskStatus.CANCELLED)
    figures = samples(scrape(client).get_data(as_text=True))
    assert value(figures, "microblog_jobs_ended_total", type="noop", outcome="cancelled") == 1
    assert value(figures, "microblog_jobs_started_total", type="noop") == 0
    assert value(figures, "microblog_job_duration_seconds_count", type="noop") == 0


def test_without_redis_it_still_answers_and_says_redis_is_down(database, redis_server):
    from app import create_app
    from tests.conftest import config_for_tests

    app = create_app(config_for_tests(REDIS_URL=f"redis://127.0.0.1:{free_port()}"))
    with app.app_context():
        response = scrape(app.test_client())
    assert response.status_code == 200
    figures = samples(response.get_data(as_text=True))
    assert value(figures, "microblog_redis_up") == 0
    assert ("microblog_tasks", (("status", "queued"), ("type", "noop"))) in figures


# --------------------------------------------------------------------------- several processes

def test_two_web_processes_report_the_same_totals_of_jobs_run_by_two_workers(
        smtp_server, app, tmp_path):
    """The deployment's shape: figures scraped through either gunicorn process agree, and count
    every job whichever of the two `rq worker` processes ran it (a retry may run on the other)."""
    mail = smtp_server.handler_ref
    port = free_port()
    access_log = tmp_path / "access.log"
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py",
         "--keep-alive", "60", "--access-logformat", "%(p)s %(s)s %(m)s %(U)s", "microblog:app"],
        cwd=ROOT, env=worker_env(WEB_CONCURRENCY=2, GUNICORN_BIND=f"127.0.0.1:{port}",
                                 GUNICORN_ACCESS_LOG=str(access_log)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers, scrapers = [], []
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _reachable(f"{base}/health"), message="gunicorn")
        scrapers = _sessions_on_two_processes(base, access_log)

        users = {name: make_user(name, posts=[f"{name} {i}" for i in range(50)])
                 for name in ("ann", "bob", "cy")}
        # A mail server that refuses the first mail: that export is retried, maybe elsewhere.
        _refuse_once(mail, "451 4.3.0 Try again later")
        retried = users["cy"].launch_task("export_posts", "Exporting")
        workers = [start_worker(), start_worker()]
        wait_for(lambda: _task(retried.id).attempts >= 1 and _task(retried.id).error,
                 message="the first attempt to fail")
        tasks = [retried,
                 users["ann"].launch_task("export_posts", "Exporting"),
                 users["ann"].launch_task("countdown", "Counting", 1),
                 users["bob"].launch_task("countdown", "Counting", "x"),  # fails
                 *(users[name].launch_task("noop", "Nothing") for name in ("ann", "bob", "cy"))]
        wait_for(lambda: all(_task(t.id).complete for t in tasks), timeout=120,
                 message="every task to end")

        texts = [_scrape(session) for session in scrapers]
    finally:
        # Idle keep-alive connections (60 s here) would hold gevent's graceful stop for its
        # whole graceful timeout (30 s): close them first, as a browser closing does.
        for session in scrapers:
            session.close()
        for process in (*workers, web):
            os.killpg(process.pid, signal.SIGTERM)
        for process in (*workers, web):
            process.wait(timeout=30)

    first, second = (samples(text) for text in texts)
    cumulative = ("microblog_jobs_", "microblog_job_duration_", "microblog_export_bytes")
    assert {k: v for k, v in first.items() if k[0].startswith(cumulative)} == {
        k: v for k, v in second.items() if k[0].startswith(cumulative)}
    assert sum(v for (name, _), v in first.items() if name == "microblog_workers") == 2

    def ended(task_type: str, outcome: str) -> float:
        return value(first, "microblog_jobs_ended_total", type=task_type, outcome=outcome)
    assert value(first, "microblog_jobs_started_total", type="noop") == 3
    assert ended("noop", "finished") == 3
    assert value(first, "microblog_jobs_started_total", type="export_posts") == 3
    assert (ended("export_posts", "finished"), ended("export_posts", "retried")) == (2, 1)
    assert (ended("countdown", "finished"), ended("countdown", "failed")) == (1, 1)
    assert value(first, "microblog_job_duration_seconds_count", type="export_posts") == 3
    # The one-second countdown ran a second at least; the failing one not at all.
    assert value(first, "microblog_job_duration_seconds_sum", type="countdown") >= 1.0
    assert value(first, "microblog_queue_depth", queue="microblog-tasks") == 0

    # Bytes written: the two files in export storage, each mailed; the attempt whose mail
    # was refused had written its file already, and its retry only sent the mail.
    mailed = sum(len(part.get_content()) for message in mail.messages
                 for part in message.iter_attachments())
    stored = sum(p.stat().st_size for p in (Path(app.instance_path) / "exports").rglob("*.json"))
    assert len(mail.messages) == 2 and stored == mailed
    assert value(first, "microblog_export_bytes_total", format="json") == stored


def _refuse_once(handler, reply: str) -> None:
    """The SMTP server answers the next DATA with `reply`, then accepts as before (each
    connection looks the hook up when it opens)."""
    accept, replies = handler.handle_DATA, [reply]

    async def handle_DATA(server, session, envelope):
        return replies.pop() if replies else await accept(server, session, envelope)
    handler.handle_DATA = handle_DATA


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def _reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=30).ok
    except requests.RequestException:
        return False


def _scrape(session: requests.Session) -> str:
    response = session.get(session.metrics_url, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return response.text


def _sessions_on_two_processes(base: str, access_log: Path) -> list[requests.Session]:
    """Two keep-alive connections served by two different gunicorn worker processes (the
    access log names the pid that served each request)."""
    # The second process may still be importing the app while the first serves every new
    # connection (on a busy machine, for many seconds): keep opening connections until one
    # lands there, up to the suite's deadline for an event.
    by_pid: dict[str, requests.Session] = {}
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        session = requests.Session()
        session.metrics_url = f"{base}/metrics"
        before = len(_lines(access_log))
        _scrape(session)
        line = wait_for(lambda n=before: _lines(access_log)[n:],
                        message="access log")
        pid = line[-1].split()[0]
        if pid in by_pid:
            session.close()
            time.sleep(0.2)
        else:
            by_pid[pid] = session
        if len(by_pid) == 2:
            return list(by_pid.values())
    for session in by_pid.values():
        session.close()
    raise AssertionError("every connection went to one gunicorn process")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_every_task_type_has_its_counters_from_the_start(client):
    """Zeros, not missing series: an alert on rate(...failed...) works before the first job."""
    figures = samples(scrape(client).get_data(as_text=True))
    from app.jobs.types import TASK_TYPES

    for task_type in TASK_TYPES:
        assert value(figures, "microblog_jobs_started_total", type=task_type) == 0
        assert value(figures, "microblog_job_duration_seconds_bucket",
                     type=task_type, le="0.1") == 0
    assert value(figures, "microblog_export_bytes_total", format="json") == 0
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 0
