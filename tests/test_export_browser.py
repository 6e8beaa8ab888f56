"""The export centre in a real Chromium (Playwright, Debian's /usr/bin/chromium) against the
app served over HTTP, with a real `rq worker` process: start a CSV export from /exports, watch
its row's bar move and the row turn into a Download without reloading the page, download the
file. The browser, server and worker fixtures are tests/test_browser.py's."""

from __future__ import annotations

import csv
import io

import pytest

import tests.test_browser as browser_tests
from tests.test_browser import CSP_RECORDER, PageWatcher, body, log_in, make_user_with_posts

# The export centre as Chromium sees it (the row's bar, the download); its pages on
# each database: test_export_pages.py, in the matrix. CI runs it once (SQLite).
pytestmark = pytest.mark.once

# The export tests' fixtures (Chromium, the live server, workers), shared.
browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server
context = browser_tests.context
worker_factory = browser_tests.worker_factory

POSTS = 3000

# Every value the history rows' bars take and every status they show, from the first paint;
# the sections are swapped by the page's script, so new rows are watched too.
ROW_RECORDER = """
(() => {
  window.__rowProgress = [];
  window.__rowStatus = [];
  const record = () => {
    const row = document.querySelector('#export-history tr.export-row');
    if (!row) { return; }
    const bar = row.querySelector('.progress');
    const value = bar && Number(bar.getAttribute('aria-valuenow'));
    const seen = window.__rowProgress;
    if (bar && seen[seen.length - 1] !== value) { seen.push(value); }
    const statuses = window.__rowStatus;
    if (statuses[statuses.length - 1] !== row.dataset.status) {
      statuses.push(row.dataset.status);
    }
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true, childList: true, attributes: true,
      attributeFilter: ['aria-valuenow', 'data-status']});
  };
  if (document.body) { start(); } else { document.addEventListener('DOMContentLoaded', start); }
})();
"""


def test_a_csv_export_started_from_the_export_centre_is_watched_and_downloaded(
        app, context, worker_factory):
    make_user_with_posts(POSTS)
    # One post per batch: the export takes a few seconds, so the page (polling once a
    # second) sees the bar between 0 and 100.
    worker = worker_factory(EXPORT_BATCH_SIZE=1)
    worker.wait_ready()
    context.add_init_script(CSP_RECORDER)
    context.add_init_script(ROW_RECORDER)
    page = context.new_page()
    watcher = PageWatcher(page)
    log_in(page)

    page.click("nav >> text=Exports")
    page.wait_for_url("**/exports")
    page.get_by_label("CSV").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Start export").click()
    page.locator(".alert", has_text="Your export has started").wait_for()
    row = page.locator("#export-history tr.export-row").first
    assert row.locator("td").first.inner_text() == "CSV"
    assert page.get_by_role("button", name="Start export").is_disabled()

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    download_link = page.locator("#export-history a", has_text="Download")
    try:
        download_link.wait_for(timeout=120_000)
    except Exception as exc:
        raise AssertionError(f"no Download appeared: {exc}\n{_describe(page, watcher)}"
                             f"\nworker:\n{worker.output()}") from exc
    info = _describe(page, watcher)
    print(info)
    assert navigations == [], f"the page navigated: {navigations}" + info
    progress = page.evaluate("window.__rowProgress")
    assert progress == sorted(progress), "the bar went backwards" + info
    assert any(0 < value < 100 for value in progress), "the bar never moved" + info
    statuses = page.evaluate("window.__rowStatus")
    assert "running" in statuses and statuses[-1] == "finished", info
    assert "Ready" in row.inner_text()
    # The start form came back with the cooldown, also without a reload.
    assert page.get_by_role("button", name="Start export").is_disabled()
    assert "Next export available at" in page.locator("#export-start").inner_text()

    with page.expect_download() as download_info:
        download_link.click()
    download = download_info.value
    assert download.suggested_filename == "posts.csv"
    with open(download.path(), encoding="utf-8-sig", newline="") as f:  # with a BOM, for Excel
        rows = list(csv.reader(io.StringIO(f.read())))
    assert rows[0] == ["id", "timestamp", "language", "body"]
    assert [r[3] for r in rows[1:]] == [body(i) for i in range(POSTS)]

    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == [], watcher.errors


def _describe(page, watcher) -> str:
    return ("\nrow progress seen: " + repr(page.evaluate("window.__rowProgress"))
            + "\nrow statuses seen: " + repr(page.evaluate("window.__rowStatus"))
            + "\nconsole: " + repr(watcher.console[-20:]))
