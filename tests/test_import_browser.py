"""The import in a real Chromium (Playwright, Debian's /usr/bin/chromium) against the app
served over HTTP, with a real `rq worker` process: a Mastodon archive whose toots carry
markup (tests/archives.py: HOSTILE_TEXTS typed by a person, and raw script, onerror and
javascript: links from a hostile server) is uploaded from /imports; its preview appears
without a reload and shows the typed markup as text; Import; the progress moves live ("1,200
of 1,504 posts"), the summary replaces it, and the timeline shows the same text as text. No
dialog opens, no element comes from the archive, the page breaks no Content-Security-Policy
rule. And on a phone, the pages of an import in each state scroll no table sideways. The
browser, server and worker fixtures are tests/test_browser.py's."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import tests.test_browser as browser_tests
import tests.test_responsive_browser as responsive_tests
from app.imports.readers.mastodon import html_to_text
from tests.archives import BASE, HOSTILE_TEXTS, mastodon_archive
from tests.conftest import make_user
from tests.test_browser import CSP_RECORDER, PageWatcher, log_in

# Escaping and the page script as Chromium sees them; the import on each database:
# test_import_pages.py and the engine's tests. CI runs it once (SQLite).
pytestmark = pytest.mark.once

browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server
context = browser_tests.context
worker_factory = browser_tests.worker_factory
phone = responsive_tests.phone

# Raw markup in `content`, as a hostile server could send it: none of it may reach a page.
RAW = [{"html": f"<p>raw {HOSTILE_TEXTS[0]} and {HOSTILE_TEXTS[1]} markup</p>"},
       {"html": '<p><a href="javascript:alert(1)" onclick="alert(1)">click</a></p>'}]
RAW_AS_TEXT = [html_to_text(toot["html"]) for toot in RAW]  # "raw  and  markup", "click"
# Older than the hostile toots (so those are the newest on the timeline), after them in the
# archive (so they are the preview's samples, its first posts): enough of them that the
# import, one post a batch, runs for a few seconds and the page sees its bar move.
FILLER = 1500
TOTAL = len(HOSTILE_TEXTS) + len(RAW) + FILLER

# Every value the import's bar takes and every progress text it shows, from the first paint
# of each page; the section is swapped by the page's script, so the new one is watched too.
STATE_RECORDER = """
(() => {
  window.__importProgress = [];
  window.__importTexts = [];
  const record = () => {
    const state = document.getElementById('import-state');
    if (!state) { return; }
    const bar = state.querySelector('.progress');
    const value = bar && Number(bar.getAttribute('aria-valuenow'));
    const seen = window.__importProgress;
    if (bar && seen[seen.length - 1] !== value) { seen.push(value); }
    const label = state.querySelector('.live-progress-text');
    const text = label && label.textContent.trim();
    const texts = window.__importTexts;
    if (text && texts[texts.length - 1] !== text) { texts.push(text); }
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true,
      attributeFilter: ['aria-valuenow']});
  };
  if (document.body) { start(); } else { document.addEventListener('DOMContentLoaded', start); }
})();
"""

# Elements inside texts that came from the archive: there must be none.
ELEMENTS_IN_ARCHIVE_TEXT = ("document.querySelectorAll("
                            "'.import-samples .post-body *, article.post .post-body *').length")


def hostile_archive(path) -> str:
    filler = [{"text": f"an older toot {n}", "published": BASE - timedelta(minutes=n + 1)}
              for n in range(FILLER)]
    return mastodon_archive(path, posts=[*HOSTILE_TEXTS, *RAW, *filler], account="susan")


def test_a_hostile_mastodon_archive_shows_as_text_from_preview_to_timeline(
        app, context, worker_factory, tmp_path):
    make_user("susan")
    archive = hostile_archive(tmp_path / "archive.zip")
    worker = worker_factory(IMPORT_BATCH_SIZE=1)
    worker.wait_ready()
    context.add_init_script(CSP_RECORDER)
    context.add_init_script(STATE_RECORDER)
    page = context.new_page()
    watcher = PageWatcher(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page)

    page.click("nav >> text=Imports")
    page.wait_for_url("**/imports")
    page.set_input_files("#import-file", archive)
    with page.expect_navigation():
        page.get_by_role("button", name="Upload and preview").click()
    page.locator(".alert", has_text="Your archive was uploaded").wait_for()

    # The preview comes in by itself, and shows what the person typed as text.
    try:
        page.locator("#import-confirm").wait_for(timeout=120_000)
    except Exception as exc:
        raise AssertionError(f"no preview appeared: {exc}\n{_describe(page, watcher)}"
                             f"\nworker:\n{worker.output()}") from exc
    samples = page.locator(".import-samples .post-body").all_inner_texts()
    assert samples[:2] == HOSTILE_TEXTS, samples
    assert samples[2:4] == RAW_AS_TEXT, samples
    assert page.locator("#preview-posts").inner_text() == f"{TOTAL:,}"
    assert page.evaluate(ELEMENTS_IN_ARCHIVE_TEXT) == 0

    with page.expect_navigation():
        page.click("#import-confirm")
    page.locator(".alert", has_text="Your import has started").wait_for()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    try:
        page.locator("#summary-imported").wait_for(timeout=300_000)
    except Exception as exc:
        raise AssertionError(f"no summary appeared: {exc}\n{_describe(page, watcher)}"
                             f"\nworker:\n{worker.output()}") from exc
    info = _describe(page, watcher)
    print(info)
    assert navigations == [], f"the page navigated: {navigations}" + info
    assert page.locator("#summary-imported").inner_text() == f"{TOTAL:,}", info
    assert "The import is done." in page.locator("#import-state").inner_text()
    progress = page.evaluate("window.__importProgress")
    assert progress == sorted(progress), "the bar went backwards" + info
    assert any(0 < value < 100 for value in progress), "the bar never moved" + info
    texts = page.evaluate("window.__importTexts")
    assert any(text.endswith(f"of {TOTAL:,} posts") or f"of {TOTAL:,} posts \u2014" in text
               for text in texts), "no count of the posts was shown" + info

    # The timeline: the newest posts are the hostile ones, shown as text.
    shown: list[str] = []
    for number in (1, 2):
        page.goto(f"/user/susan?page={number}")
        shown += page.locator("article.post .post-body").all_inner_texts()
        assert page.evaluate(ELEMENTS_IN_ARCHIVE_TEXT) == 0
    for text in [*HOSTILE_TEXTS, *RAW_AS_TEXT]:
        assert text in shown, (text, shown)

    assert dialogs == [], f"dialogs opened: {dialogs}"
    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == [], watcher.errors


def _describe(page, watcher) -> str:
    return ("\nimport progress seen: " + repr(page.evaluate("window.__importProgress"))
            + "\nimport texts seen: " + repr(page.evaluate("window.__importTexts")[-10:])
            + "\nconsole: " + repr(watcher.console[-20:]))


def _imports_of_every_state(user) -> list:
    """An import in each state, with a long file name, account and sample, and large counts."""
    from app import db
    from app.models import Import, Task, TaskStatus, utcnow

    now = utcnow()
    long_word = "x" * 120
    preview = json.dumps({
        "kind": "mastodon", "account": f"{long_word}@{long_word}.example", "posts": 1_234_567,
        "already": 300_003, "first": "2019-03-01T08:00:00Z", "last": "2024-12-31T23:59:59Z",
        "skipped": {"boost": 300_003, "reply": 300_003, "direct": 3, "private": 3},
        "broken": 300_003, "follows": 300_003, "warnings": [],
        "samples": [{"body": long_word * 4, "timestamp": "2020-01-01T00:00:00Z"}]})
    states = [("previewing", Import.PREVIEW, TaskStatus.RUNNING, {}),
              ("ready", Import.PREVIEW, TaskStatus.FINISHED,
               {"confirm_by": now + timedelta(minutes=30)}),
              ("importing", Import.IMPORT, TaskStatus.RUNNING, {"imported": 300_003}),
              ("finished", Import.IMPORT, TaskStatus.FINISHED,
               {"imported": 1_234_567, "finished_at": now,
                "skipped_json": json.dumps({"duplicate": 300_003, "reply": 300_003})}),
              ("failed", Import.PREVIEW, TaskStatus.FAILED, {}),
              ("cancelled", Import.IMPORT, TaskStatus.CANCELLED, {"imported": 300_003})]
    imports = []
    for i, (name, stage, status, fields) in enumerate(states):
        active = status in TaskStatus.ACTIVE
        task = Task(id=f"phone-import-{i}", user_id=user.id, description="Importing posts...",
                    name="import_posts" if stage == Import.IMPORT else "preview_import",
                    status=status, complete=not active, progress=40, dismissed=True,
                    active_name=(("import_posts" if stage == Import.IMPORT else
                                  "preview_import") if active else None),
                    error=("This file looks like a zip archive, but it is damaged or "
                           "truncated." if status == TaskStatus.FAILED else None))
        imp = Import(user_id=user.id, stage=stage, kind="mastodon", size=123_456_789,
                     filename=f"{name}-{long_word}.zip", task=task, preview_json=preview,
                     created_at=now - timedelta(hours=i), **fields)
        db.session.add_all([task, imp])
        imports.append(imp)
    db.session.commit()
    return [imp.id for imp in imports]


@pytest.mark.parametrize("phone", ["en-US", "es-ES", "ko-KR"], indirect=True)
def test_the_import_pages_fit_a_phone_without_sideways_scrolling(app, phone):
    from tests.test_responsive_browser import OVERFLOW

    ids = _imports_of_every_state(make_user("susan"))
    page = phone.new_page()
    watcher = PageWatcher(page)
    log_in(page)
    page.goto("/imports")
    assert page.locator("#import-history tr.import-row").count() == len(ids)
    assert page.evaluate(OVERFLOW) == []
    for import_id in ids:
        page.goto(f"/imports/{import_id}")
        assert page.evaluate(OVERFLOW) == [], import_id
    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == [], watcher.errors
