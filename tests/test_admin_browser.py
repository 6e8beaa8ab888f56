"""The admin view as an operator uses it: a real Chromium against the live server, a real
`rq worker` and a real SMTP server. An admin signs in, follows "Admin", reads the summary and
a failed export's reason and traceback, and retries it to success through the confirmation
page, with no console error (the strict CSP forbids inline scripts and styles)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import tests.test_browser as browser_tests
from app import db
from app.jobs import lifecycle
from app.models import Task, TaskStatus, User
from tests.conftest import make_user, wait_for
from tests.test_browser import PageWatcher, log_in

# The admin view as Chromium sees it; the admin actions on each database:
# test_admin.py, in the matrix. CI runs it once (SQLite).
pytestmark = pytest.mark.once

# The export tests' fixtures (Chromium, the live server, workers), shared.
browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server
context = browser_tests.context
worker_factory = browser_tests.worker_factory


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def test_an_admin_finds_a_failed_export_and_retries_it_in_the_browser(
        smtp_server, app, context, worker_factory):
    handler = smtp_server.handler_ref
    handler.fail_with = "550 5.1.1 Mailbox unavailable"
    susan = make_user("susan", posts=["hello"])
    make_user("boss").admin = True
    db.session.commit()
    worker = worker_factory()
    task_id = lifecycle.launch(susan, "export_posts", "Exporting posts...").id
    wait_for(lambda: _task(task_id).complete, message="the export to fail")
    assert _task(task_id).status == TaskStatus.FAILED, worker.output()

    page = context.new_page()
    watcher = PageWatcher(page)
    log_in(page, "boss")
    page.click("nav >> text=Admin")
    page.wait_for_url("**/admin/jobs")
    assert page.locator('[data-figure="failed"] .figure-value').inner_text() == "1"
    assert page.locator('[data-figure="running"] .figure-value').inner_text() == "0"
    assert page.locator("#workers tbody tr").count() == 1  # the worker, alive
    row = page.locator(f'#task-list tr[data-task="{task_id}"]')
    assert "failed" in row.inner_text()
    assert "The mail server refused the message (550)." in row.inner_text()

    row.get_by_role("link").click()
    page.wait_for_url(f"**/admin/jobs/{task_id}")
    assert "SMTPDataError" in page.locator("#traceback").inner_text()
    handler.fail_with = None
    page.get_by_role("link", name="Retry…").click()
    page.wait_for_url(f"**/admin/jobs/{task_id}/retry")
    assert _task(task_id).status == TaskStatus.FAILED  # the confirmation page changed nothing
    with page.expect_navigation():
        page.locator("#confirm").get_by_role("button", name="Retry").click()
    assert "The task is queued again." in page.locator("main").inner_text()

    wait_for(lambda: _task(task_id).complete, message="the retry to finish")
    page.reload()
    assert page.locator("#task-status").inner_text() == "finished (100%)", worker.output()
    assert page.locator("#task-attempts").inner_text().startswith("2")
    assert len(handler.messages) == 1
    assert watcher.errors == [], watcher.errors

    # A member who is not an admin sees no Admin link, and the page is not there for them.
    susan_page = context.new_page()
    context.clear_cookies()
    log_in(susan_page, "susan")
    assert susan_page.locator("nav >> text=Admin").count() == 0
    assert susan_page.goto("/admin/jobs").status == 404
    assert db.session.scalar(sa.select(User).where(User.username == "susan")).is_admin is False
