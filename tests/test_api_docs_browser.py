"""/api/docs in a real Chromium (tests/test_browser.py's harness): Swagger UI renders the
API's own document, every file comes from this server (machines are offline at run time),
and the page runs under its Content-Security-Policy without a violation or a console
error."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

import tests.test_browser as browser_tests
from tests.test_browser import CSP_RECORDER, PageWatcher, browser_context

pytestmark = pytest.mark.once  # no database behind the page

browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server


def test_the_api_documentation_page_shows_every_resource_from_local_files(
        app, browser, live_server, request):
    with browser_context(browser, live_server, request.node.name, CSP_RECORDER,
                         locale="en-US") as context:
        page = context.new_page()
        watcher = PageWatcher(page)
        hosts: set[str] = set()
        page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
        page.goto("/api/docs")
        page.locator(".opblock-tag").first.wait_for()
        tags = {t.strip() for t in page.locator(".opblock-tag").all_inner_texts()}
        for resource in ("exports", "tasks", "tokens", "users", "posts", "events"):
            assert any(t.startswith(resource) for t in tags), tags
        assert page.locator(".info .title").inner_text().startswith("Microblog API")
        assert page.locator(".opblock-summary-path", has_text="/api/exports/{export_id}"
                            ).count() >= 2
        assert hosts == {urlsplit(live_server).netloc}, hosts
        assert page.evaluate("window.__cspViolations") == []
        assert watcher.errors == []
