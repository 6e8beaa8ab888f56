"""Live push as a person sees it: a real Chromium (Playwright, Debian's /usr/bin/chromium)
holding the page's own EventSource on /events of the app served over HTTP, real `rq worker`
processes publishing each step of a task, the unread-messages badge and logout. Each test
watches what the page shows without reloading it, and which requests it makes: no poll of
/notifications while the stream works, polls only when the stream cannot be had.

The browser, server and worker fixtures are tests/test_browser.py's; the stream as a plain
HTTP client reads it: tests/test_events.py."""

from __future__ import annotations

import re
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError

import tests.test_browser as browser_tests
from tests.conftest import CSRF, make_user
from tests.test_browser import (
    PASSWORD,
    PageWatcher,
    alert_of,
    describe,
    log_in,
    make_user_with_posts,
    wait_terminal,
)
from tests.test_events import logged_in_session
from tests.test_export_browser import ROW_RECORDER

# The page script and the stream as Chromium sees them; the stream on each database:
# tests/test_events.py, in the matrix. CI runs this module once (SQLite).
pytestmark = pytest.mark.once

browser = browser_tests.browser
live_server = browser_tests.live_server
context = browser_tests.context
worker_factory = browser_tests.worker_factory


@pytest.fixture
def config_overrides():
    # Reached as 127.0.0.1 (no fixed SERVER_NAME). A short heartbeat: a stream whose tab has
    # gone notices at its next keep-alive, so the live server's threads do not pile up.
    return {"SERVER_NAME": None, "EVENTS_HEARTBEAT": 1, "EVENTS_MAX_AGE": 600}


# Every EventSource the page opens, with what it received, so that a test can tell that the
# events came through the page's own stream and whether that stream is closed. The page's
# script is untouched: it still calls `new EventSource(...)`, which is this subclass.
STREAM_RECORDER = """
(() => {
  const Native = window.EventSource;
  if (!Native) { return; }
  window.__streams = [];
  // Of every message, in the order the page got them: its id, and whether it was an event (live
  // or replayed: the publisher stamps it `sent`) or an item of the state a stream begins with.
  window.__eventIds = [];
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      const seen = { opened: 0, messages: 0, logouts: 0 };
      this.__seen = seen;
      window.__streams.push(this);
      this.addEventListener('open', () => { seen.opened += 1; });
      this.addEventListener('message', (event) => {
        seen.messages += 1;
        let kind = 'event';
        try {
          if (JSON.parse(event.data).sent === undefined) { kind = 'state'; }
        } catch (error) { /* not JSON: counted as an event */ }
        window.__eventIds.push([event.lastEventId, kind]);
      });
      this.addEventListener('logout', () => { seen.logouts += 1; });
    }
  };
  // Every text the task alerts show beside their bars ("1,200 of 3,000 posts — about 4 s left").
  window.__taskTexts = [];
  const record = () => {
    document.querySelectorAll('#tasks .task-alert .task-text').forEach((label) => {
      const texts = window.__taskTexts;
      const text = label.textContent;
      if (text && texts[texts.length - 1] !== text) { texts.push(text); }
    });
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.body,
                                         { subtree: true, childList: true, characterData: true });
  };
  if (document.body) { start(); } else { document.addEventListener('DOMContentLoaded', start); }
})();
"""

STREAMS = "window.__streams.map((s) => Object.assign({state: s.readyState}, s.__seen))"
CLOSED = 2  # EventSource.readyState


class RequestLog:
    """The requests a page makes to /events and /notifications, in order (their URLs, for
    the failure messages), with the Last-Event-ID an EventSource sends when it reconnects."""

    def __init__(self, page):
        self.seen: list[tuple[str, str, str | None]] = []
        page.on("request", self._on_request)

    def _on_request(self, request):
        path = urlsplit(request.url).path
        if path in ("/events", "/notifications"):
            # all_headers(): the headers as sent, which the network stack completes (the
            # `headers` known when the request starts lack Last-Event-ID).
            try:
                last_id = request.all_headers().get("last-event-id")
            except PlaywrightError:  # the page is closing at the end of the test
                last_id = None
            self.seen.append((path, request.url, last_id))

    def to(self, path: str) -> list[str | None]:
        """The Last-Event-ID of each request to `path` (None where it sent none)."""
        return [last_id for seen, _url, last_id in self.seen if seen == path]


@pytest.fixture
def live_context(context):
    context.add_init_script(STREAM_RECORDER)
    return context


def open_page(context, url="/index", log_in_as=None):
    page = context.new_page()
    watcher = PageWatcher(page)
    requests_made = RequestLog(page)
    if log_in_as:
        log_in(page, log_in_as)
    page.goto(url)
    return page, watcher, requests_made


def wait_stream_open(page):
    page.wait_for_function(
        "() => window.__streams.length > 0"
        " && window.__streams[window.__streams.length - 1].readyState === EventSource.OPEN")


def launch_countdown(username="susan", seconds=4):
    """The countdown task of `username` (one step a second), launched as the app does."""
    import sqlalchemy as sa

    from app import db
    from app.models import User

    user = db.session.scalar(sa.select(User).where(User.username == username))
    return user.launch_task("countdown", "Counting", seconds)


def details(page, watcher, requests_made, worker=None) -> str:
    return (describe(page, watcher, worker)
            + "\ntexts seen: " + repr(page.evaluate("window.__taskTexts"))
            + "\nstreams: " + repr(page.evaluate(STREAMS))
            + "\nrequests: " + repr(requests_made.seen))


def watch_to_the_end(page, watcher, requests_made, worker, timeout_ms: int) -> str:
    """Wait, without reloading, for the task alert's end state; what the page went through
    (printed, and for the assertions' messages)."""
    try:
        wait_terminal(page, timeout_ms=timeout_ms)
    except Exception as exc:
        raise AssertionError(f"no end state: {exc}"
                             + details(page, watcher, requests_made, worker)) from exc
    info = details(page, watcher, requests_made, worker)
    print(info)
    return info


def assert_each_event_once_in_order(page) -> int:
    """Every event the page got (live or replayed) has an id greater than the message before
    it. A stream that cannot replay (the first, or a Last-Event-ID the log no longer holds)
    begins with the state instead: an item per task and the unread count, all under the log's
    head id, which may equal the message before (the state includes that event)."""
    ids = [(tuple(map(int, i.split("-"))), kind)
           for i, kind in page.evaluate("window.__eventIds")]
    again = [(a, b) for a, b in pairwise(ids)
             if b[0] < a[0] or (b[0] == a[0] and b[1] == "event")]
    assert again == [], f"{len(again)} events again or out of order, of {len(ids)}: {again[:5]}"
    return len(ids)


def assert_bar_moved_to_the_end(page, info: str) -> None:
    seen = page.evaluate("window.__progressSeen")
    assert seen == sorted(seen), f"the bar went backwards: {seen}" + info
    assert len({v for v in seen if 0 < v < 100}) >= 2, f"the bar did not move: {seen}" + info
    assert seen[-1] == 100, info
    assert page.evaluate("window.__statusSeen")[-1] == "finished", info


# --------------------------------------------------------------------------- tests

def test_progress_reaches_the_pages_event_source_and_no_poll_is_made(
        app, live_context, worker_factory):
    """An export started from the profile: the bar moves through several values to the
    success message, with counts and an estimate beside it, all of it pushed through the
    page's EventSource: not one request to /notifications."""
    make_user_with_posts(2000)
    worker = worker_factory(EXPORT_BATCH_SIZE=2, TASK_PROGRESS_INTERVAL=0.1)
    worker.wait_ready()
    page, watcher, requests_made = open_page(live_context, "/user/susan", log_in_as="susan")
    with page.expect_navigation():
        page.get_by_role("button", name="Export your posts").click()
    wait_stream_open(page)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    info = watch_to_the_end(page, watcher, requests_made, worker, 120_000)
    assert navigations == [], navigations
    assert_bar_moved_to_the_end(page, info)
    assert alert_of(page).get_attribute("data-status") == "finished", info
    assert "Your posts were exported" in alert_of(page).inner_text(), info
    texts = page.evaluate("window.__taskTexts")
    counted = re.compile(r"^[\d,]+ of 2,000 posts \u2014 about \d+ (s|min) left$")
    assert any(counted.match(text) for text in texts), f"no count with an estimate: {texts}"
    # The events came through the page's own stream, and nothing was polled.
    streams = page.evaluate(STREAMS)
    assert sum(s["messages"] for s in streams) >= 4, info
    assert requests_made.to("/events"), info
    assert requests_made.to("/notifications") == [], info
    assert watcher.errors == [], watcher.errors


@pytest.mark.parametrize("drop", ["stream_max_age", "redis_pubsub_killed"])
def test_after_the_server_drops_the_stream_the_page_resumes_to_the_final_state(
        app, live_context, worker_factory, drop):
    """The server ends the stream mid-task, by its age limit (every stream lasts a second)
    or because the web process lost its Redis subscription (CLIENT KILL TYPE pubsub): the
    browser reconnects with Last-Event-ID, the bar never goes backwards and the finished
    state arrives."""
    make_user("susan")
    if drop == "stream_max_age":
        app.config["EVENTS_MAX_AGE"] = 1
    worker = worker_factory()
    worker.wait_ready()
    page, watcher, requests_made = open_page(live_context, log_in_as="susan")
    wait_stream_open(page)
    launch_countdown(seconds=5)
    if drop == "redis_pubsub_killed":
        page.wait_for_function("() => window.__progressSeen.some((v) => v > 0)")
        assert app.redis.client_kill_filter(_type="pubsub") >= 1

    info = watch_to_the_end(page, watcher, requests_made, worker, 120_000)
    assert_bar_moved_to_the_end(page, info)
    assert "Countdown complete." in alert_of(page).inner_text(), info
    # The same EventSource reconnected, saying where it had got to.
    assert len(page.evaluate(STREAMS)) == 1, info
    resumed = [last_id for last_id in requests_made.to("/events") if last_id]
    assert resumed, info
    assert all(re.fullmatch(r"\d+-\d+", last_id) for last_id in resumed), info
    assert_each_event_once_in_order(page)
    assert requests_made.to("/notifications") == [], info
    assert watcher.errors == [], watcher.errors


def test_a_page_reconnecting_while_events_pour_in_gets_each_one_once_in_order(
        app, live_context):
    """Streams that last a fraction of a second while the user's events are published
    hundreds a second: each reconnection (Last-Event-ID) replays from the log what the page
    missed, and the events published while it does so are not sent a second time (a repeated
    older event would move a bar backwards for a moment). The badge ends at the last count."""
    import threading

    from app import events

    user_id = make_user("susan").id
    app.config["EVENTS_MAX_AGE"] = 0.3
    # One event in the log before the page opens: a stream that starts from an empty log
    # gives its state the id 0-0, and a second one, reconnecting before the publisher's
    # first event (a busy machine starts the thread late), would give it that id again.
    events.publish(app.redis, user_id, events.event("unread_message_count", 0))
    page, watcher, requests_made = open_page(live_context, log_in_as="susan")
    wait_stream_open(page)
    published = []
    stop = threading.Event()

    def publish_fast():  # what each commit of a notification does after it, at its fastest
        while not stop.wait(0.001):
            count = len(published) + 1
            events.publish(app.redis, user_id, events.event("unread_message_count", count))
            published.append(count)

    publisher = threading.Thread(target=publish_fast, daemon=True)
    publisher.start()
    try:
        page.wait_for_function("() => window.__streams[0].__seen.opened >= 5", timeout=60_000)
    finally:
        stop.set()
        publisher.join(timeout=10)
    last = f"{published[-1]:,}"  # the badge groups thousands, as the page's language does
    page.wait_for_function(
        f"() => document.getElementById('message_count').textContent === '{last}'")
    info = details(page, watcher, requests_made)
    received = assert_each_event_once_in_order(page)
    streams = page.evaluate(STREAMS)
    print(f"published {len(published)}, received {received} (the state first), "
          f"reconnections {streams[0]['opened'] - 1}")
    assert len(streams) == 1, info
    assert requests_made.to("/notifications") == [], info
    assert watcher.errors == [], watcher.errors


def test_when_the_stream_is_refused_the_page_polls_quietly(app, live_context, worker_factory):
    """/events answers 503, as a proxy or a Redis outage gives: the page polls /notifications
    instead, the bar still moves to the finished message, and the page says nothing alarming
    (the 503 itself is the only failed request)."""
    make_user("susan")
    worker = worker_factory()
    worker.wait_ready()
    page, watcher, requests_made = open_page(live_context, url="/auth/login")
    page.route("**/events", lambda route: route.fulfill(
        status=503, content_type="text/plain", headers={"Retry-After": "60"},
        body="Live updates are unavailable; the page checks for news instead.\n"))
    log_in(page)
    # Launched before the page is shown: the page polls fast while it shows a running task.
    launch_countdown(seconds=5)
    page.goto("/index")

    info = watch_to_the_end(page, watcher, requests_made, worker, 120_000)
    seen = page.evaluate("window.__progressSeen")
    assert seen == sorted(seen), f"the bar went backwards: {seen}" + info
    assert any(0 < v < 100 for v in seen), f"the bar did not move: {seen}" + info
    assert seen[-1] == 100, info
    assert "Countdown complete." in alert_of(page).inner_text(), info
    assert len(requests_made.to("/notifications")) >= 3, info
    assert page.evaluate(STREAMS)[-1]["state"] == CLOSED, info
    # Nothing on the page but the task's own alert, and no error but the refused stream.
    assert page.locator(".alert-danger, .alert-warning").count() == 0, info
    assert "unavailable" not in page.locator("body").inner_text()
    refused = re.compile(r"HTTP 503: GET \S+/events$")
    assert [e for e in watcher.errors if not refused.match(e)] == [], watcher.errors
    assert any(refused.match(e) for e in watcher.errors), watcher.errors


def test_an_export_started_in_one_tab_appears_finished_in_another(
        app, live_context, worker_factory):
    """Two tabs of the same user on /exports: the export started in the first shows up in
    the second, its row's bar moving and then the Download, and its task alert ends in
    success, with no reload and no poll in the second tab."""
    make_user_with_posts(1000)
    worker = worker_factory(EXPORT_BATCH_SIZE=1, TASK_PROGRESS_INTERVAL=0.1)
    worker.wait_ready()
    live_context.add_init_script(ROW_RECORDER)
    first, first_watcher, _ = open_page(live_context, "/exports", log_in_as="susan")
    second, watcher, requests_made = open_page(live_context, "/exports")
    wait_stream_open(second)
    assert second.locator("#export-history tr.export-row").count() == 0
    navigations: list[str] = []
    second.on("framenavigated", lambda frame: navigations.append(frame.url))

    first.get_by_label("JSON").check()
    with first.expect_navigation():
        first.get_by_role("button", name="Start export").click()
    first.locator(".alert", has_text="Your export has started").wait_for()

    download = second.locator("#export-history a", has_text="Download")
    try:
        download.wait_for(timeout=120_000)
        wait_terminal(second, timeout_ms=60_000)
    except Exception as exc:
        raise AssertionError(f"the other tab did not follow: {exc}"
                             + details(second, watcher, requests_made, worker)) from exc
    info = (details(second, watcher, requests_made, worker)
            + "\nrow progress seen: " + repr(second.evaluate("window.__rowProgress"))
            + "\nrow statuses seen: " + repr(second.evaluate("window.__rowStatus")))
    print(info)
    assert navigations == [], navigations
    row = second.locator("#export-history tr.export-row").first
    assert row.locator("td").first.inner_text() == "JSON"
    assert "Ready" in row.inner_text()
    row_progress = second.evaluate("window.__rowProgress")
    assert row_progress == sorted(row_progress), "the row's bar went backwards" + info
    assert second.evaluate("window.__rowStatus")[-1] == "finished", info
    alert = alert_of(second)
    assert alert.get_attribute("data-status") == "finished", info
    assert "Your posts were exported" in alert.inner_text(), info
    assert requests_made.to("/notifications") == [], info
    assert watcher.errors == [] and first_watcher.errors == [], \
        watcher.errors + first_watcher.errors


def send_message(base: str, sender: str, recipient: str, text: str) -> None:
    """What `sender` does in their own browser: the message form, with its CSRF token."""
    session = logged_in_session(base, sender)
    form = session.get(f"{base}/send_message/{recipient}", timeout=60).text
    match = CSRF.search(form)
    response = session.post(f"{base}/send_message/{recipient}", allow_redirects=False,
                            timeout=60, data={"message": text,
                                              "csrf_token": match.group(1) or match.group(2)})
    assert response.status_code == 302, response.text


def test_the_unread_messages_badge_follows_new_messages_by_push(app, live_context, live_server):
    """Another user sends two messages through the app's form (in their own HTTP session):
    the recipient's open page shows 1, then 2, with no reload and no poll."""
    make_user("susan")
    make_user("bob", password=PASSWORD)
    page, watcher, requests_made = open_page(live_context, log_in_as="susan")
    wait_stream_open(page)
    badge = page.locator("#message_count")
    assert not badge.is_visible()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    send_message(live_server, "bob", "susan", "hello susan")
    badge.wait_for(state="visible")
    assert badge.inner_text() == "1"
    send_message(live_server, "bob", "susan", "are you there?")
    page.wait_for_function("() => document.getElementById('message_count').textContent === '2'")
    info = details(page, watcher, requests_made)
    assert badge.is_visible(), info
    assert navigations == [], navigations
    assert requests_made.to("/notifications") == [], info
    assert watcher.errors == [], watcher.errors


def test_logging_out_in_one_tab_closes_the_stream_of_the_other(app, live_context):
    """The other tab's EventSource receives `logout` and is closed: it neither reconnects to
    /events nor starts polling /notifications."""
    make_user("susan")
    first, first_watcher, _ = open_page(live_context, log_in_as="susan")
    second, watcher, requests_made = open_page(live_context)
    wait_stream_open(first)
    wait_stream_open(second)

    with first.expect_navigation():
        first.get_by_role("button", name="Logout").click()
    assert first.get_by_role("link", name="Login").is_visible()
    second.wait_for_function(
        "() => window.__streams.length === 1 && window.__streams[0].__seen.logouts === 1"
        " && window.__streams[0].readyState === EventSource.CLOSED")
    made = list(requests_made.seen)
    # An EventSource left open would reconnect after the stream's retry (1 s), be refused
    # (401), and the page would fall back to polling: give it three times that.
    second.wait_for_timeout(3000)
    info = details(second, watcher, requests_made)
    assert requests_made.seen == made, info
    assert requests_made.to("/notifications") == [], info
    assert len(requests_made.to("/events")) == 1, info
    assert second.evaluate(STREAMS) == [
        {"state": CLOSED, "opened": 1, "messages": 1, "logouts": 1}], info
    assert watcher.errors == [] and first_watcher.errors == [], \
        watcher.errors + first_watcher.errors
