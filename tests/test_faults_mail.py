"""Fault: the mail server down for two minutes, then back. See docs/reliability.md."""

from __future__ import annotations

import time

import pytest

from app.models import TaskStatus
from tests.conftest import csrf_token, make_user, start_worker, wait_for
from tests.conftest import stop_process as _stop
from tests.faults import (
    assert_tasks_truthful,
    mails_by_recipient,
    tasks_by_user,
)


class RestartableSMTP:
    """An aiosmtpd server on a fixed port that can go away and come back on it."""

    def __init__(self) -> None:
        from tests.conftest import MailCollector
        from tests.test_deployment import free_port

        self.handler = MailCollector()
        self.port = free_port()
        self.controller = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def restartable_smtp(config_overrides, monkeypatch):
    server = RestartableSMTP()
    config_overrides.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=server.port)
    monkeypatch.setenv("MAIL_SERVER", "127.0.0.1")
    monkeypatch.setenv("MAIL_PORT", str(server.port))
    yield server
    server.stop()


SMTP_OUTAGE = 120  # seconds


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mail_server_down_two_minutes_then_each_mail_arrives_once(restartable_smtp, app, client):
    """Exports and password-reset mails asked for while the mail server is down are retried
    (MAIL_RETRY_INTERVALS 20, 40, 80 s span the outage) and each arrives exactly once."""
    app.config["MAIL_RETRY_INTERVALS"] = [20, 40, 80]
    users = [make_user(name, posts=[f"{name}'s post"]) for name in ("ana", "bob")]
    for user in users:
        user.launch_task("export_posts", "Exporting posts...")
    for user in users:
        token = csrf_token(client, "/auth/reset_password_request")
        response = client.post("/auth/reset_password_request", data={
            "email": user.email, "csrf_token": token})
        assert response.status_code == 302
    worker = start_worker()
    down_since = time.monotonic()
    try:
        wait_for(lambda: all(t.status == TaskStatus.QUEUED and t.attempts >= 1
                             for t in tasks_by_user().values()), interval=0.5,
                 message="both exports to fail once and wait for their retry")
        assert all(t.error == "The mail server could not be reached. Retrying automatically."
                   for t in tasks_by_user().values())
        time.sleep(max(0.0, SMTP_OUTAGE - (time.monotonic() - down_since)))
        assert not any(t.complete for t in tasks_by_user().values())
        restartable_smtp.start()
        wait_for(lambda: all(t.complete for t in tasks_by_user().values()), timeout=180,
                 interval=1, message="both exports to end")
        wait_for(lambda: len(restartable_smtp.handler.messages) >= 4, timeout=120,
                 interval=1, message="the two password-reset mails")
        time.sleep(3)  # a duplicate would arrive now
    finally:
        log = _stop(worker)
        print(log)
    messages = restartable_smtp.handler.messages
    tasks = tasks_by_user()
    assert all(t.status == TaskStatus.FINISHED for t in tasks.values()), log
    assert_tasks_truthful(tasks, messages)
    resets = mails_by_recipient(messages, "[Microblog] Reset Your Password")
    assert resets == {"ana@example.com": 1, "bob@example.com": 1}, log
    assert len(messages) == 4
