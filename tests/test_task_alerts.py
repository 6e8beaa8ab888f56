"""The task alerts every page shows: a task in progress has one; a task that ended has one
that says what happened (ready, failed with the reason, cancelled) with a link to its
result, shown once and then gone by itself; older ends of the same kind are out of date and
never stack up. Jobs run in this process (RQ's SimpleWorker); the page's own script, in
Chromium, is tests/test_browser.py::test_the_end_of_an_export_is_shown_once_with_its_link."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from app import db
from app.exports import centre
from app.models import Post, Task, TaskStatus
from tests.conftest import csrf_token, login, run_jobs_in_process
from tests.endpoints import fast_user


@pytest.fixture
def config_overrides():
    return {"EXPORT_COOLDOWN": 0}


@pytest.fixture
def susan(app, client):
    user = fast_user("susan")
    db.session.add(Post(body="hello", author=user))
    db.session.commit()
    login(client, "susan")
    return user


def _alerts(client, url: str = "/index") -> list[str]:
    """The task alerts of a page, as text (one string each)."""
    return _alerts_in(client.get(url).get_data(as_text=True))


def _start(client, fmt: str = "json") -> None:
    token = csrf_token(client, "/exports")
    response = client.post("/exports", data={"csrf_token": token, "format": fmt})
    assert response.status_code == 302


def test_five_finished_exports_leave_one_alert_that_says_ready_links_and_then_goes(
        app, client, susan):
    for _ in range(5):
        _start(client)
        run_jobs_in_process(app)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Task).where(
        Task.status == TaskStatus.FINISHED)) == 5

    html = client.get("/index").get_data(as_text=True)
    alerts = _alerts_in(html)
    assert len(alerts) == 1, alerts
    assert "Your export is ready." in alerts[0] and "Exporting posts" not in alerts[0]
    assert "Your posts were exported" in alerts[0]
    assert re.search(r'<a class="alert-link task-result[^"]*" href="/exports"', html)
    assert _alerts(client, "/explore") == []  # seen: not shown again, nor the older four
    assert _alerts(client, "/index") == []


def _alerts_in(html: str) -> list[str]:
    tasks = html.split('<div id="tasks"')[1].split("</main>")[0]
    blocks = re.findall(r'<div class="alert task-alert.*?</div>\s*</div>', tasks, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", block)).strip() for block in blocks]


def test_a_cancelled_and_a_failed_export_say_so_once(app, client, susan, monkeypatch):
    _start(client)
    export = centre.exports_of(susan)[0]
    token = csrf_token(client, "/exports")
    client.post(f"/exports/{export.id}/cancel", data={"csrf_token": token})
    [alert] = _alerts(client)
    assert "Your export was cancelled." in alert and "Cancelled by you." in alert
    assert _alerts(client) == []

    from app.exports import delivery

    def no_disk(export, attempt, on_progress=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(delivery, "write_file", no_disk)
    _start(client, "csv")
    run_jobs_in_process(app)
    [alert] = _alerts(client, "/user/susan")
    assert "Your export failed." in alert and "The server ran out of disk space." in alert
    assert _alerts(client, "/user/susan") == []


def test_a_task_in_progress_keeps_its_alert_on_every_page(app, client, susan):
    _start(client)
    for url in ("/index", "/explore", "/index"):
        [alert] = _alerts(client, url)
        assert "Exporting posts" in alert
    run_jobs_in_process(app)
    [alert] = _alerts(client)
    assert "Your export is ready." in alert
    assert _alerts(client) == []


def test_a_page_that_fails_or_a_partial_marks_nothing_seen(app, client, susan):
    _start(client)
    run_jobs_in_process(app)
    assert client.get("/exports?sections=1").status_code == 200  # the script's refresh
    assert client.get("/user/nobody").status_code == 404
    [alert] = _alerts(client)
    assert "Your export is ready." in alert
