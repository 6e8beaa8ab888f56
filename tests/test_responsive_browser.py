"""Pages on a phone: a real Chromium (tests/test_browser.py's harness) at a 375 x 812 viewport,
a phone's, shows the export centre and the admin's job page without sideways scrolling, of
the page or of a table inside it, with every row's buttons on screen."""

from __future__ import annotations

from datetime import timedelta

import pytest

import tests.test_browser as browser_tests
from tests.test_browser import CSP_RECORDER, PageWatcher, browser_context, log_in

pytestmark = pytest.mark.once

browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server

PHONE = {"width": 375, "height": 812}

# What scrolls sideways: the page itself, and any element of it whose content is wider than
# its box and that lets it scroll (Bootstrap's .table-responsive does). The page is measured
# against the layout viewport (the root's clientWidth, the 375 px): a phone shows a page wider
# than that zoomed out, and window.innerWidth then grows with the page.
OVERFLOW = """
() => {
  const found = [];
  const root = document.documentElement;
  const width = root.clientWidth;
  if (width !== 375) { found.push(`the layout viewport is ${width} px wide, not 375`); }
  if (root.scrollWidth > width) {
    found.push(`the page: ${root.scrollWidth} px wide in ${width}`);
  }
  document.querySelectorAll('main *').forEach((el) => {
    const style = getComputedStyle(el);
    if (['auto', 'scroll'].includes(style.overflowX) && el.scrollWidth > el.clientWidth) {
      found.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className}: `
                 + `${el.scrollWidth} px wide in ${el.clientWidth}`);
    }
  });
  document.querySelectorAll('main button, main a.btn').forEach((el) => {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 0.5) {
      found.push(`"${el.textContent.trim()}" ends at ${Math.round(box.right)} px`);
    }
  });
  return found;
}
"""


@pytest.fixture
def phone(browser, live_server, request):
    with browser_context(browser, live_server, request.node.name, CSP_RECORDER,
                         viewport=PHONE, is_mobile=True, has_touch=True,
                         device_scale_factor=2, locale=request.param) as context:
        yield context


def _exports_of_every_state(user) -> None:
    """Two exports in each state an export can be in, with long figures and long reasons."""
    from app import db
    from app.models import Export, Task, TaskStatus, utcnow

    now = utcnow()
    for i, status in enumerate([TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.FINISHED,
                                TaskStatus.FAILED, TaskStatus.CANCELLED, "expired",
                                "replaced"] * 2):
        ended = status not in (TaskStatus.QUEUED, TaskStatus.RUNNING)
        task = Task(id=f"phone-{i}", name="export_posts", user_id=user.id,
                    description="Exporting posts...", complete=ended,
                    status=TaskStatus.FINISHED if status in ("expired", "replaced") else status,
                    progress=40 if status == TaskStatus.RUNNING else 0,
                    error="The mail server refused the message (550)."
                    if status == TaskStatus.FAILED else None,
                    dismissed=True)
        finished = status in (TaskStatus.FINISHED, "expired", "replaced")
        removed = status in ("expired", "replaced")
        # Expired by retention: removed once its time ran out; replaced: removed before.
        expires_at = now - timedelta(hours=1) if status == "expired" else now + timedelta(days=7)
        db.session.add_all([task, Export(
            user_id=user.id, format=("json", "csv", "activitystreams")[i % 3], task=task,
            filename="posts.json", storage_key=f"phone-{i}" if finished else None,
            posts_count=300003 if finished else None,
            size=123_456_789_012 if finished else None,
            created_at=now - timedelta(hours=i), finished_at=now if finished else None,
            expires_at=expires_at if finished else None,
            expired_at=now if removed else None)])
    db.session.commit()


@pytest.mark.parametrize("phone", ["en-US", "es-ES", "ko-KR"], indirect=True)
def test_the_export_centre_fits_a_phone_without_sideways_scrolling(app, phone):
    from tests.conftest import make_user

    _exports_of_every_state(make_user())
    page = phone.new_page()
    watcher = PageWatcher(page)
    log_in(page)
    page.goto("/exports")
    rows = page.locator("#export-history tr.export-row")
    assert rows.count() == 14
    for status in ("queued", "running", "finished", "failed", "cancelled", "expired",
                   "replaced"):
        assert page.locator(f'tr.export-row[data-status="{status}"]').count() == 2, status
    assert page.evaluate(OVERFLOW) == []
    # What a user needs from a row stays on a phone: its status and its buttons (which
    # OVERFLOW found on screen).
    finished = page.locator('tr.export-row[data-status="finished"]').first
    assert finished.locator(".export-status .badge").is_visible()
    assert finished.locator('a[href$="/download"]').is_visible()
    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == [], watcher.errors


@pytest.mark.parametrize("phone", ["en-US", "es-ES"], indirect=True)
def test_the_admin_jobs_page_fits_a_phone_without_sideways_scrolling(app, phone,
                                                                      monkeypatch):
    from app import db
    from app.jobs import stats
    from app.models import utcnow
    from tests.conftest import make_user

    boss = make_user("boss")
    boss.admin = True
    db.session.commit()
    _exports_of_every_state(boss)
    worker = stats.WorkerFigures(
        name="4f1e9a27c0d84b6f9d7a0e35b2c1f8aa", hostname="worker-host-1.internal",
        pid=123456, state="busy", queues=["microblog-tasks"], current_job_id="phone-1",
        job_since=utcnow(), last_heartbeat=utcnow(), born=utcnow(), successful_jobs=300003,
        failed_jobs=300003, rss_bytes=123_456_789)
    monkeypatch.setattr(stats, "workers", lambda: [worker])
    page = phone.new_page()
    watcher = PageWatcher(page)
    log_in(page, "boss")
    page.goto("/admin/jobs")
    assert page.locator("#task-list tbody tr").count() == 14
    assert page.locator("#workers tbody tr").count() == 1
    assert page.evaluate(OVERFLOW) == []
    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == [], watcher.errors
