"""The counts the page's script writes (a task's "12,400 of 100,000 posts", the unread
messages badge) are grouped the way the page's language groups them, as the server's are
(tests/test_number_formats.py): a real Chromium (tests/test_browser.py's harness) on /exports
in Spanish, sent live events."""

from __future__ import annotations

import time

import pytest

import tests.test_browser as browser_tests
from tests.test_browser import CSP_RECORDER, PageWatcher, browser_context, log_in

pytestmark = pytest.mark.once

browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server


def _until_shown(page, selector: str, expected: str, send, timeout: float = 30) -> str:
    """Send the event (again, twice a second: the page's stream may not be open yet) until
    the element reads `expected`; returns what it read last."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        send()
        page.wait_for_timeout(500)
        text = page.locator(selector).first.inner_text().strip()
        if text == expected:
            break
    return text


def test_counts_written_by_the_page_script_follow_the_pages_language(app, browser,
                                                                    live_server, request):
    from app import db, events
    from app.models import Export, Task, TaskStatus
    from tests.conftest import make_user

    susan = make_user()
    task = Task(id="running-export", name="export_posts", user_id=susan.id,
                description="Exporting posts...", status=TaskStatus.RUNNING, progress=12)
    db.session.add_all([task, Export(user_id=susan.id, format="json", task=task)])
    db.session.commit()
    progress = events.event("task_progress", task.to_dict() | {
        "done": 12400, "total": 100000, "unit": "posts"})
    unread = events.event("unread_message_count", 300003)

    with browser_context(browser, live_server, request.node.name, CSP_RECORDER,
                         locale="es-ES") as context:
        page = context.new_page()
        watcher = PageWatcher(page)
        log_in(page)
        page.goto("/exports")
        assert page.locator("html").get_attribute("lang") == "es"

        def send_progress():
            events.publish(app.redis, susan.id, progress)

        expected = "12.400 de 100.000 publicaciones"
        assert _until_shown(page, "tr.export-row .export-progress-text", expected,
                            send_progress) == expected
        assert page.locator("#task-running-export .task-text").inner_text().strip() == expected

        def send_unread():
            events.publish(app.redis, susan.id, unread)

        assert _until_shown(page, "#message_count", "300.003", send_unread) == "300.003"
        assert page.evaluate("window.__cspViolations") == []
        assert watcher.errors == [], watcher.errors
