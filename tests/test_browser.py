"""The export as a person sees it: a real Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against the app served over HTTP by a live server, with a real `rq worker`
process and the local outbox for mail. Nothing in these tests reloads the page while a task
runs: the progress alert must move, and turn into the result, by the page's own script."""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import EVENT_TIMEOUT, make_user, start_worker, wait_for, worker_env

# The page script, the CSP and the progress UI as Chromium sees them; the jobs and
# their rows on each database: test_tasks.py, in the matrix. CI runs it once (SQLite).
pytestmark = pytest.mark.once

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PASSWORD = "correct horse battery"
SCREENSHOTS = Path("/tmp")

# Records every value the task alerts' progress bars take, and every status, from the first
# paint of each page on: the page is never reloaded, so what is seen here is what the page's
# own script did.
RECORDER = """
(() => {
  window.__progressSeen = [];
  window.__statusSeen = [];
  const record = () => {
    document.querySelectorAll('#tasks .task-alert').forEach((alert) => {
      const bar = alert.querySelector('.progress');
      const value = bar && bar.getAttribute('aria-valuenow');
      const seen = window.__progressSeen;
      if (value !== null && value !== undefined && value !== ''
          && seen[seen.length - 1] !== Number(value)) {
        seen.push(Number(value));
      }
      const statuses = window.__statusSeen;
      const status = alert.dataset.status;
      if (status && statuses[statuses.length - 1] !== status) { statuses.push(status); }
    });
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true, childList: true, attributes: true,
      attributeFilter: ['aria-valuenow', 'class', 'data-status']});
  };
  if (document.body) { start(); } else { document.addEventListener('DOMContentLoaded', start); }
})();
"""


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        print(f"SKIPPED: {CHROMIUM} does not exist (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package `chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def config_overrides():
    # A live server is reached as 127.0.0.1, so no fixed SERVER_NAME; a page's event stream
    # lasts as long as in production (the suite's default ends it at once).
    return {"SERVER_NAME": None, "EVENTS_MAX_AGE": 600}


@pytest.fixture
def live_server(app):
    """The app over real HTTP: werkzeug's threaded server on a free port, in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


class Worker:
    """A real `rq worker` subprocess; its output is kept for failure messages."""

    def __init__(self, app, **env):
        self.app = app
        self.proc = start_worker(env=worker_env(**env))
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines[-80:])

    def wait_ready(self, timeout=EVENT_TIMEOUT):
        import rq

        def ready():
            assert self.proc.poll() is None, f"worker exited:\n{self.output()}"
            return rq.Worker.count(queue=self.app.task_queue) > 0

        wait_for(ready, timeout=timeout, message="the rq worker to register")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except Exception:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        self.reader.join(timeout=5)


@pytest.fixture
def worker_factory(app):
    workers: list[Worker] = []

    def start(**env):
        worker = Worker(app, **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


class PageWatcher:
    """Console errors, uncaught exceptions and failed requests of a page (the browser's own
    request for /favicon.ico included: the app has one)."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)

    def _on_request_failed(self, request):
        # A poll still in flight when the page navigates away is aborted by the browser: that
        # is the navigation, not a failure of the site.
        if request.failure != "net::ERR_ABORTED":
            self.errors.append(f"request failed: {request.method} {request.url} "
                               f"{request.failure}")

    def _on_console(self, msg):
        self.console.append(f"{msg.type}: {msg.text}")
        # A failed load is reported with its URL by _on_response.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console error: {msg.text}")

    def _on_response(self, response):
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@pytest.fixture
def context(browser, live_server, request):
    with browser_context(browser, live_server, request.node.name, RECORDER,
                         locale="en-US") as context:
        yield context


@contextmanager
def browser_context(browser, live_server, name: str, init_script: str, **options):
    """A browser context on the live server running `init_script` in every page; when done,
    a screenshot of each of its pages is left in /tmp, named after `name`, for a person to
    look at afterwards."""
    context = browser.new_context(base_url=live_server, **options)
    context.set_default_timeout(60_000)
    context.add_init_script(init_script)
    try:
        yield context
    finally:
        for i, page in enumerate(context.pages):
            try:
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{i}.png"), full_page=True)
            except Exception:
                pass
        context.close()


def log_in(page, username="susan", password=PASSWORD):
    page.goto("/auth/login")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("main form [type=submit]")
    assert "/auth/login" not in page.url, page.content()[-2000:]


def open_profile(page, username="susan"):
    page.click("nav >> text=Profile")
    page.wait_for_url(f"**/user/{username}")


def alert_of(page):
    return page.locator("#tasks .task-alert").first


def wait_terminal(page, timeout_ms):
    """Wait, without reloading, until the task alert says finished or failed."""
    page.wait_for_function(
        """() => { const a = document.querySelector('#tasks .task-alert');
                   return a && ['finished', 'failed', 'cancelled'].includes(a.dataset.status); }""",
        timeout=timeout_ms)


def export_from_profile(context):
    """A new page, logged in, that clicked "Export your posts" on the profile: the page, its
    watcher and the task alert (visible)."""
    page = context.new_page()
    watcher = PageWatcher(page)
    log_in(page)
    open_profile(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Export your posts").click()
    alert = alert_of(page)
    alert.wait_for(state="visible")
    return page, watcher, alert


def describe(page, watcher, worker=None) -> str:
    return ("\nstatuses seen: " + repr(page.evaluate("window.__statusSeen"))
            + "\nprogress seen: " + repr(page.evaluate("window.__progressSeen"))
            + "\nconsole: " + repr(watcher.console[-20:])
            + ("\nworker:\n" + worker.output() if worker else ""))


def body(i: int) -> str:
    return f'post number {i} <b>bold</b> "quoted" 😀\nsecond line'


def make_user_with_posts(count: int):
    """susan (conftest.make_user) with `count` posts, one millisecond apart, inserted in one
    statement (the ORM would take seconds for thousands)."""
    from datetime import timedelta

    import sqlalchemy as sa

    from app import db
    from app.models import Post, utcnow

    user = make_user()
    start = utcnow() - timedelta(days=1)
    db.session.execute(sa.insert(Post), [
        {"body": body(i), "timestamp": start + timedelta(milliseconds=i), "user_id": user.id}
        for i in range(count)])
    db.session.commit()
    return user


# --------------------------------------------------------------------------- tests

def test_export_progress_success_and_outbox(app, context, worker_factory, monkeypatch):
    """Log in, click Export, watch the bar advance to the success message without a reload,
    then read the mail in the outbox."""
    posts = 8000
    make_user_with_posts(posts)
    # Tiny batches make the export take a few seconds (no sleep in the task), so the page,
    # which polls once a second, can see the bar move.
    worker = worker_factory(EXPORT_BATCH_SIZE=4)
    worker.wait_ready()

    page = context.new_page()
    watcher = PageWatcher(page)
    log_in(page)
    open_profile(page)
    export = page.locator("form#export-control")
    assert export.is_visible()

    started = time.monotonic()
    with page.expect_navigation():
        page.get_by_role("button", name="Export your posts").click()
    page.wait_for_url("**/user/susan")
    # From here on: no navigation. The alert is there, the Export control is not.
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    alert = alert_of(page)
    alert.wait_for(state="visible")
    assert "Exporting posts" in alert.inner_text()
    assert not export.is_visible()

    try:
        wait_terminal(page, timeout_ms=120_000)
    except Exception as exc:
        raise AssertionError(f"the alert did not reach an end state: {exc}"
                             + describe(page, watcher, worker)) from exc
    elapsed = time.monotonic() - started
    seen = page.evaluate("window.__progressSeen")
    statuses = page.evaluate("window.__statusSeen")
    info = describe(page, watcher, worker) + f"\nelapsed: {elapsed:.1f}s"
    print(info)

    assert navigations == [], f"the page navigated: {navigations}" + info
    assert alert.get_attribute("data-status") == "finished", info
    classes = alert.get_attribute("class").split()
    assert "alert-success" in classes and "alert-info" not in classes, info
    assert "email" in alert.inner_text().lower(), alert.inner_text() + info
    # The bar moved: it showed a value strictly between 0 and 100, never went backwards,
    # and ended at 100.
    assert seen == sorted(seen), f"progress went backwards: {seen}" + info
    assert any(0 < v < 100 for v in seen), f"no progress between 0 and 100 seen: {seen}" + info
    assert seen[-1] == 100, info
    assert "running" in statuses, info
    # The Export control is back, without a reload.
    export.wait_for(state="visible", timeout=30_000)
    assert watcher.errors == [], watcher.errors

    # The mail is in the outbox, with posts.json attached.
    page.goto("/outbox/")
    row = page.locator("tr", has_text="[Microblog] Your blog posts")
    row.wait_for(state="visible")
    assert "posts.json" in row.inner_text()
    assert "susan@example.com" in row.inner_text()

    # And the attachment holds every post.
    page.get_by_role("link", name="[Microblog] Your blog posts").click()
    link = page.locator("a", has_text="posts.json").first
    href = link.get_attribute("href")
    response = page.request.get(href)
    assert response.ok
    data = response.json()
    assert len(data["posts"]) == posts
    assert data["posts"][0]["body"] == body(0)
    assert data["posts"][-1]["body"] == body(posts - 1)
    assert all(p["timestamp"].endswith("Z") for p in data["posts"])


def test_second_export_is_refused_while_one_runs(app, context, worker_factory):
    """Two tabs: the one still showing the Export button asks again while the first export is
    queued; it gets the tutorial's flash and no second task exists. Then the worker starts and
    the first tab's alert ends in success without a reload."""
    from app import db
    from app.models import Task

    make_user(posts=[f"post {i}" for i in range(50)])

    first = context.new_page()
    watcher = PageWatcher(first)
    log_in(first)
    open_profile(first)
    second = context.new_page()
    second_watcher = PageWatcher(second)
    second.goto("/user/susan")
    assert second.locator("form#export-control").is_visible()

    with first.expect_navigation():
        first.get_by_role("button", name="Export your posts").click()
    alert_of(first).wait_for(state="visible")
    assert alert_of(first).get_attribute("data-status") == "queued"
    assert not first.locator("form#export-control").is_visible()

    # The stale tab still shows the button (its page was rendered before the export began).
    with second.expect_navigation():
        second.get_by_role("button", name="Export your posts").click()
    flash = second.locator(".alert", has_text="An export task is currently in progress")
    flash.wait_for(state="visible")
    assert "alert-warning" in flash.get_attribute("class")
    # The refused tab shows the running export and no Export button.
    assert second.locator("#tasks .task-alert").count() == 1
    assert not second.locator("form#export-control").is_visible()

    # The same refusal for a direct POST with the page's CSRF token (a double submit).
    token = first.locator("form#export-control input[name=csrf_token]").get_attribute("value")
    response = first.request.post("/export_posts", form={"csrf_token": token})
    assert response.ok
    assert "An export task is currently in progress" in response.text()

    db.session.expire_all()
    assert db.session.query(Task).count() == 1

    worker = worker_factory()
    worker.wait_ready()
    try:
        wait_terminal(first, timeout_ms=120_000)
    except Exception as exc:
        raise AssertionError(f"no end state: {exc}" + describe(first, watcher, worker)) from exc
    alert = alert_of(first)
    assert alert.get_attribute("data-status") == "finished", describe(first, watcher, worker)
    assert "alert-success" in alert.get_attribute("class")
    first.locator("form#export-control").wait_for(state="visible", timeout=30_000)
    assert watcher.errors == [] and second_watcher.errors == [], \
        watcher.errors + second_watcher.errors


def test_failed_export_turns_red_with_reason(app, context, worker_factory, dead_smtp_port):
    """The mail server is down past every retry: the alert turns red with the reason, without
    a reload, and the Export button comes back."""
    make_user(posts=[f"post {i}" for i in range(20)])
    worker = worker_factory()  # inherits MAIL_SERVER/MAIL_PORT (closed) and short retries
    worker.wait_ready()

    # Not asserted here that the button hides while the export runs (test_second_export_is_
    # refused_while_one_runs does): with the mail server down and 1-second retries, a busy
    # machine may draw the page after the export has already failed.
    page, watcher, alert = export_from_profile(context)
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    try:
        wait_terminal(page, timeout_ms=120_000)
    except Exception as exc:
        raise AssertionError(f"no end state: {exc}" + describe(page, watcher, worker)) from exc
    info = describe(page, watcher, worker)
    print(info)
    assert navigations == [], navigations
    assert alert.get_attribute("data-status") == "failed", info
    classes = alert.get_attribute("class").split()
    assert "alert-danger" in classes and "alert-success" not in classes, info
    assert "mail server could not be reached" in alert.inner_text(), alert.inner_text() + info
    assert not alert.locator(".progress").is_visible()
    page.locator("form#export-control").wait_for(state="visible", timeout=30_000)
    assert watcher.errors == [], watcher.errors

    from app import db
    from app.models import Task

    db.session.expire_all()
    task = db.session.query(Task).one()
    assert task.status == "failed" and task.complete
    assert task.attempts >= 2, "the transient mail error was not retried"


# Every Content-Security-Policy violation of a page (and of its frames), from the first paint.
CSP_RECORDER = """
(() => {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`
                                + ` at ${e.sourceFile || document.URL}:${e.lineNumber}`);
  });
})();
"""


def test_main_pages_run_under_the_content_security_policy(app, context):
    """The pages a user sees, with the site's CSP in force: no violation reported, no console
    error, and the page's scripts still do their work (the task bar's width, Bootstrap's
    collapsing navigation, the outbox's mail body in its iframe)."""
    from datetime import timedelta

    from app import db
    from app.email import send_email
    from app.models import Message, Task, TaskStatus, utcnow

    susan = make_user(posts=["a post of susan's"])
    bob = make_user("bob", password=PASSWORD, posts=["a post of bob's"])
    db.session.add(Message(author=bob, recipient=susan, body="hello susan"))
    # A running task with no job behind it: the page's poll would end it as lost by the queue
    # ENQUEUE_GRACE (60 s) after its creation, sooner than a busy machine may get through these
    # pages to the bar; so it is dated an hour ahead.
    db.session.add(Task(id="csp-task", name="example", description="Counting slowly",
                        user_id=susan.id, status=TaskStatus.RUNNING, active_name="example",
                        progress=40, created_at=utcnow() + timedelta(hours=1)))
    db.session.commit()
    send_email("Your mail", sender="admin@microblog.example", recipients=["susan@example.com"],
               text_body="plain words",
               html_body="<p style='color: rgb(200, 0, 0)'>the <b>html</b> words</p>", sync=True)

    context.add_init_script(CSP_RECORDER)
    page = context.new_page()
    page.set_viewport_size({"width": 600, "height": 900})  # the navigation collapses
    watcher = PageWatcher(page)

    def violations() -> list[str]:
        return page.evaluate("window.__cspViolations")

    first = page.goto("/auth/login")
    policy = first.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy, policy
    assert "unsafe-inline" not in policy
    log_in(page)
    visited = []
    for url in ["/index", "/explore", "/user/susan", "/user/bob", "/messages",
                "/send_message/bob", "/edit_profile", "/outbox/"]:
        page.goto(url)
        page.wait_for_load_state("load")
        visited.append((url, violations()))
    assert all(found == [] for _url, found in visited), visited

    # The task bar gets its width from the page's script (no style= attribute).
    page.goto("/index")
    bar = page.locator("#task-csp-task .progress-bar")
    # Set once the script has run, which a busy machine may not have got to at "load".
    page.wait_for_function(
        "() => document.querySelector('#task-csp-task .progress-bar')?.style.width === '40%'")
    assert bar.evaluate("el => el.style.width") == "40%"
    bar.wait_for(state="visible")  # laid out: a busy machine may not have got there yet
    assert bar.bounding_box()["width"] > 0
    # Bootstrap's script: the collapsed navigation opens (it animates through the CSSOM).
    page.click(".navbar-toggler")
    page.locator("#navbarNav.show").wait_for(state="visible")
    page.click("#navbarNav >> text=Profile")
    page.wait_for_url("**/user/susan")
    assert page.locator("form#export-control").is_visible()  # the export button

    # The outbox message with the mail's HTML body in its sandboxed iframe.
    page.goto("/outbox/")
    page.get_by_role("link", name="Your mail").click()
    frame = page.frame_locator("iframe.outbox-html")
    words = frame.locator("p")
    words.wait_for(state="visible")
    assert words.inner_text() == "the html words"
    # The mail's own inline style applies inside the sandbox (its own policy allows it).
    assert words.evaluate("el => getComputedStyle(el).color") == "rgb(200, 0, 0)"
    assert page.locator("iframe.outbox-html").bounding_box()["height"] > 100
    assert violations() == [], violations()
    # The test's own init scripts (the recorders above) are refused in the sandboxed frame,
    # as any script would be: that is the sandbox at work, not an error of the page.
    sandboxed = re.compile(r"console error: Blocked script execution in '[^']+/html' because "
                           r"the document's frame is sandboxed")
    assert [e for e in watcher.errors if not sandboxed.match(e)] == [], watcher.errors

    # And the recorder does see a violation: an inline script is refused.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__inlineRan = true';
                             document.body.appendChild(s); }""")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert page.evaluate("window.__inlineRan") is None
    assert any("script-src" in v for v in violations()), violations()


# Counts the page's EventSources that have opened (the page keeps its own out of reach).
COUNT_OPEN_STREAMS = """
(() => {
  const Native = window.EventSource;
  window.__openStreams = 0;
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      this.addEventListener('open', () => { window.__openStreams += 1; });
    }
  };
})();
"""


@pytest.fixture
def xss_world(app, client):
    from tests.test_xss import build_xss_world

    return build_xss_world(client)


def test_no_xss_payload_runs_in_any_page(app, context, xss_world):
    """Every page that shows user text, loaded in Chromium with payloads everywhere (see
    tests/test_xss.py): none sets window.__xss or opens a dialog, and a task alert that the
    page's script builds from a pushed event shows its payload description as text."""
    from app import db
    from tests.test_xss import PAYLOADS, pages

    ghost = {"task_id": "ghost", "name": "export_posts", "status": "running", "progress": 5,
             "description": PAYLOADS[1], "error": None, "message": None}
    page = context.new_page()
    page.add_init_script(COUNT_OPEN_STREAMS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, "alice")
    for url in pages(xss_world) + ["/index"]:
        page.goto(url)
        page.wait_for_load_state("load")
        # Broken images fire onerror once they have failed to load.
        page.wait_for_function("Array.from(document.images).every((img) => img.complete)")
        assert page.evaluate("window.__xss") is None, f"a payload ran on {url}"
    page.reload()
    # Open means subscribed (the server answers only then). Waiting for any /events answer is
    # not enough: the one of the page before the reload may come in late, and an event pushed
    # before this page's stream subscribed is not in the state it starts with (a ghost task
    # has no row).
    page.wait_for_function("() => window.__openStreams > 0")
    xss_world["alice"].add_notification("task_progress", ghost, topic="ghost")
    db.session.commit()  # pushed to the open page
    alert = page.locator("#task-ghost .task-description")
    alert.wait_for()
    assert alert.text_content() == PAYLOADS[1]
    assert page.evaluate("window.__xss") is None
    assert not dialogs, f"dialogs opened: {dialogs}"


def test_the_end_of_an_export_is_shown_once_with_its_link(app, context, worker_factory):
    """The alert turns into "Your export is ready." with a link to the export centre,
    without a reload; the page's script tells the server it was seen, so the next page has
    no alert (the pages alone: tests/test_task_alerts.py)."""
    from app import db
    from app.models import Task

    make_user_with_posts(2000)
    worker = worker_factory(EXPORT_BATCH_SIZE=20)
    worker.wait_ready()
    # The export may already be over when the page has loaded (a busy machine is slow to
    # draw it): what matters is the alert it ends with.
    page, watcher, alert = export_from_profile(context)
    try:
        wait_terminal(page, timeout_ms=120_000)
    except Exception as exc:
        raise AssertionError(f"no end state: {exc}" + describe(page, watcher, worker)) from exc
    info = describe(page, watcher, worker)
    assert alert.get_attribute("data-status") == "finished", info
    assert "Your export is ready." in alert.inner_text(), alert.inner_text() + info
    assert "Exporting posts" not in alert.inner_text()
    link = alert.locator("a.task-result")
    assert link.get_attribute("href") == "/exports" and link.is_visible()

    def seen() -> bool:
        db.session.expire_all()
        return db.session.scalar(db.select(Task.dismissed))

    wait_for(seen, message="the page to tell the server the end was seen")
    with page.expect_navigation():
        link.click()
    page.wait_for_url("**/exports")
    assert page.locator("#export-history a", has_text="Download").count() == 1
    assert page.locator("#tasks .task-alert").count() == 0
    page.goto("/index")
    assert page.locator("#tasks .task-alert").count() == 0
    assert watcher.errors == [], watcher.errors
