"""The API tokens page in a real Chromium (Playwright, Debian's /usr/bin/chromium) against the
app served over HTTP: from the edit-profile page to API tokens, a token created with a name, an
expiry and a scope is shown once with a Copy button that puts it on the clipboard; after a
reload it is gone from the page and only its row remains; revoking it removes the row and the
token stops working. No console error, no Content-Security-Policy violation. The browser and
server fixtures are tests/test_browser.py's; the rules themselves: test_api_tokens_page.py."""

from __future__ import annotations

import pytest

import tests.test_browser as browser_tests
from app import db
from app.models import ApiToken
from tests.conftest import make_user
from tests.test_browser import CSP_RECORDER, PageWatcher, log_in

# What Chromium shows and runs; the rules on each database: test_api_tokens_page.py. CI runs
# it once (SQLite).
pytestmark = pytest.mark.once

browser = browser_tests.browser
config_overrides = browser_tests.config_overrides
live_server = browser_tests.live_server


@pytest.fixture
def context(browser, live_server, request):
    with browser_tests.browser_context(browser, live_server, request.node.name, CSP_RECORDER,
                                       locale="en-US") as context:
        # The Copy button writes to the clipboard; the test reads it back.
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
        yield context


def test_a_new_token_is_shown_once_copied_and_gone_after_a_reload(app, context):
    make_user()
    page = context.new_page()
    watcher = PageWatcher(page)
    log_in(page)
    page.goto("/edit_profile")
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url("**/settings/tokens")
    assert "revokes all your tokens" in page.locator("#tokens-revoked-by-password").inner_text()

    page.fill("#name", "nightly backup")
    page.select_option("#expires", "90")
    page.check("input[name=scope][value='read write']")
    with page.expect_navigation():
        page.get_by_role("button", name="Create token").click()

    secret_field = page.locator("#new-token-secret")
    secret = secret_field.input_value()
    assert secret.startswith(ApiToken.PREFIX)
    assert "it will not be shown again" in page.locator("#new-token").inner_text()
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    db.session.expire_all()
    token = ApiToken.find(secret)
    assert token is not None and token.name == "nightly backup" and token.allows("write")
    db.session.rollback()  # find() brought last_used_at up to date: not a use by the page

    page.reload()
    assert page.locator("#new-token").count() == 0
    assert secret not in page.content()
    row = page.locator(f"#token-{token.id}")
    assert row.locator(".token-name").inner_text() == "nightly backup"
    assert "Read and write" in row.inner_text() and "Never used" in row.inner_text()

    with page.expect_navigation():
        row.get_by_role("button", name="Revoke").click()
    assert 'The token "nightly backup" was revoked' in page.locator(".alert-success").inner_text()
    assert page.locator(f"#token-{token.id}").count() == 0
    db.session.expire_all()
    assert ApiToken.find(secret) is None

    assert page.evaluate("window.__cspViolations") == []
    assert watcher.errors == []
