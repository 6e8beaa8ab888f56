"""Caps on open /events streams (app/live/caps.py): one account (or one address) cannot hold
the connections everybody else's pages need. The flood runs against a real gunicorn with the
gevent worker, as deployed, with a small worker_connections so that a few hundred streams are
enough to fill it without caps; the rest against the in-process live server."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import statistics
import time

import pytest
import requests

import tests.test_browser as browser_tests
import tests.test_live_browser as live_browser_tests
from tests.conftest import make_user, wait_for
from tests.test_events import EventStream, logged_in_session
from tests.web_server import gunicorn

live_server = browser_tests.live_server
browser = browser_tests.browser
context = browser_tests.context
live_context = live_browser_tests.live_context
FLOOD = 300
CONNECTIONS = 100  # gunicorn's worker_connections in the flood test
PER_USER = 5
SAMPLES = 200
# Allowed on top of 1.5 x the idle p99: the machine running the suite may be busy with other
# work (a second suite, a browser), and a page that takes ~20-40 ms idle can be delayed by
# another process taking the CPU for a moment; two such stalls are the p99 of 200 samples
# (seen beside a second suite: 184 ms flooded against 52 ms idle, medians 20 and 25 ms).
# Without caps the pages waited seconds and timed out.
FLOOR_SECONDS = 0.25
MEDIAN_FLOOR_SECONDS = 0.01


@pytest.fixture
def config_overrides():
    return {"SERVER_NAME": None, "EVENTS_HEARTBEAT": 0.5, "EVENTS_MAX_AGE": 600}


def _cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def _open_raw_streams(port: int, cookie: str, count: int, address: str | None = None):
    """`count` GET /events on their own connections, sent at once as a script would."""
    request = (f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream"
               f"\r\nCookie: {cookie}\r\n"
               + (f"X-Forwarded-For: {address}\r\n" if address else "") + "\r\n").encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        try:
            sock.send(request)
        except BlockingIOError:  # not expected for a few hundred bytes
            sock.setblocking(True)
            sock.sendall(request)
            sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _answered(data: bytes) -> bool:
    """A stream's head, or a refusal's whole response (headers and text)."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found or head.startswith(b"HTTP/1.1 200"):
        return bool(found)
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return len(body) >= length


def _read_heads(sockets, timeout: float) -> dict[socket.socket, bytes]:
    """What each connection got within `timeout` (absent: no answer yet): a stream's head, a
    refusal's whole response, whose connection is then closed, as EventSource does."""
    heads: dict[socket.socket, bytes] = {}
    data = {sock: b"" for sock in sockets}
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(heads) < len(sockets) and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(timeout=min(left, 0.5)):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            data[sock] += chunk
            if _answered(data[sock]) or not chunk:
                heads[sock] = data[sock]
                selector.unregister(sock)
                if not data[sock].startswith(b"HTTP/1.1 200"):
                    sock.close()
    selector.close()
    return heads


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0


def _page_latencies(base: str, cookies, samples: int) -> list[float]:
    """A logged-in page load per sample, each on a new connection as a new visitor's is
    (a connection already open would be served by the greenlet that holds it)."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        try:
            response = requests.get(f"{base}/index", cookies=cookies, timeout=15,
                                    headers={"Connection": "close"})
            assert response.status_code == 200
            times.append(time.perf_counter() - start)
        except requests.Timeout:  # starved: no need to wait out the other samples too
            times.append(float("inf"))
            break
    return times


def _p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[98]


@pytest.mark.timeout(400)
def test_one_user_flooding_streams_is_capped_and_other_users_pages_stay_fast(app):
    make_user("mallory")
    make_user("susan")
    with gunicorn(GUNICORN_WORKER_CONNECTIONS=CONNECTIONS, EVENTS_HEARTBEAT=0.5,
                  EVENTS_MAX_AGE=600, EVENTS_MAX_PER_USER=PER_USER,
                  EVENTS_MAX_PER_ADDRESS=10 * FLOOD) as server:
        mallory = logged_in_session(server.base, "mallory")
        susan = logged_in_session(server.base, "susan")
        _page_latencies(server.base, susan.cookies, 10)  # warm up
        idle = _page_latencies(server.base, susan.cookies, SAMPLES)

        flood = _open_raw_streams(server.port, _cookie_header(mallory), FLOOD)
        susan_stream = None
        try:
            heads = _read_heads(flood, timeout=60)
            busy = _page_latencies(server.base, susan.cookies, SAMPLES)
            assert sum(t == float("inf") for t in busy) == 0, "another user's pages timed out"
            susan_stream = EventStream(susan, f"{server.base}/events")
            assert susan_stream.response.status_code == 200
            assert susan_stream.next_event()["data"]["name"] == "unread_message_count"

            statuses = [_status(heads.get(sock, b"")) for sock in flood]
            assert statuses.count(200) == PER_USER, sorted(set(statuses))
            assert statuses.count(429) == FLOOD - PER_USER, sorted(set(statuses))
            refused = next(heads[s] for s in flood if _status(heads.get(s, b"")) == 429)
            assert b"Retry-After: 60" in refused
            assert f"already has {PER_USER} live update streams open".encode() in refused
        finally:
            for sock in flood:
                sock.close()
            if susan_stream is not None:
                susan_stream.close()
        # Idle again: the baseline is the slower of the two idle runs, so that the machine
        # getting busier or quieter meanwhile does not decide the comparison.
        idle_after = _page_latencies(server.base, susan.cookies, SAMPLES)
        idle_p99, busy_p99 = max(_p99(idle), _p99(idle_after)), _p99(busy)
        figures = (f"idle p99 {_p99(idle) * 1000:.1f} / {_p99(idle_after) * 1000:.1f} ms, "
                   f"median {statistics.median(idle) * 1000:.1f} ms; while flooded p99 "
                   f"{busy_p99 * 1000:.1f} ms, median {statistics.median(busy) * 1000:.1f} ms, "
                   f"{sum(t == float('inf') for t in busy)} timed out")
        print(figures)
        # Starvation shows in every statistic (the old code's pages timed out); a busy
        # machine's stalls only in the tail. So the median is held to 1.5 x idle, and the p99
        # to 1.5 x idle plus the stalls another program may cause; `bench pages --phases
        # streams` measures the p99 ratio on a quiet machine.
        busy_median = statistics.median(busy)
        idle_median = max(statistics.median(idle), statistics.median(idle_after))
        assert busy_median <= 1.5 * idle_median + MEDIAN_FLOOR_SECONDS, figures
        assert busy_p99 <= 1.5 * idle_p99 + FLOOR_SECONDS, figures

        # Closed streams give their slots back (noticed at their next keep-alive).
        def reopened():
            stream = EventStream(mallory, f"{server.base}/events")
            ok = stream.response.status_code == 200
            stream.close()
            return ok

        wait_for(reopened, interval=0.5, message="a slot freed by closed streams")


@pytest.mark.timeout(180)
def test_the_slots_of_a_killed_web_process_free_themselves(app):
    make_user("susan")
    with gunicorn(EVENTS_HEARTBEAT=0.5, EVENTS_MAX_AGE=600, EVENTS_MAX_PER_USER=2) as server:
        session = logged_in_session(server.base, "susan")
        held = [EventStream(session, f"{server.base}/events") for _ in range(2)]
        try:
            assert [s.response.status_code for s in held] == [200, 200]
            third = session.get(f"{server.base}/events", timeout=10)
            assert third.status_code == 429
            (victim,) = server.worker_pids()
            os.kill(victim, signal.SIGKILL)  # no code of ours runs: only the lease ends it
            wait_for(lambda: server.worker_pids() and server.worker_pids() != [victim],
                     timeout=60, message="gunicorn to replace its worker")

            def opened():
                try:
                    response = session.get(f"{server.base}/events", timeout=10, stream=True)
                except requests.RequestException:
                    return False
                response.close()
                return response.status_code == 200

            started = time.monotonic()
            wait_for(opened, interval=0.5, message="the dead process's slots")
            # The lease (3 heartbeats + 5 s), not the stream's 10 minutes.
            assert time.monotonic() - started < 30
        finally:
            for stream in held:
                stream.close()


def _open(session: requests.Session, base: str, address: str | None = None):
    headers = {"Accept": "text/event-stream"}
    if address:
        headers["X-Forwarded-For"] = address
    return session.get(f"{base}/events", headers=headers, stream=True, timeout=(5, 10))


def _assert_refused(response: requests.Response, status: int, words: str) -> None:
    """Refused with a clear status and text, and told when to try again (the page polls)."""
    assert response.status_code == status
    assert response.headers["Retry-After"] == "60"
    assert words in response.text


@pytest.fixture
def held():
    """Responses of streams the test holds open, closed at its end."""
    responses: list[requests.Response] = []
    yield responses
    for response in responses:
        response.close()


def test_streams_past_the_per_address_cap_are_refused_other_addresses_open(
        app, live_server, held):
    app.config.update(TRUSTED_PROXY_COUNT=1, EVENTS_MAX_PER_ADDRESS=3)
    names = ["ann", "bob", "cy", "dee", "eve"]
    for name in names:
        make_user(name)
    sessions = {name: logged_in_session(live_server, name) for name in names}
    held.extend(_open(sessions[name], live_server, "203.0.113.7") for name in names[:3])
    assert [r.status_code for r in held] == [200, 200, 200]
    _assert_refused(_open(sessions["dee"], live_server, "203.0.113.7"), 429,
                    "3 live update streams are open from your network address")
    held.append(_open(sessions["eve"], live_server, "198.51.100.9"))
    assert held[-1].status_code == 200


def test_streams_past_the_per_process_cap_get_503_with_retry_after(app, live_server, held):
    from app.live import caps

    # The live server runs in this test process, which other tests' streams may still hold
    # until the server notices they were closed: start from none.
    wait_for(lambda: caps.open_in_this_process() == 0, message="earlier tests' streams to end")
    app.config.update(EVENTS_MAX_PER_PROCESS=2)
    make_user("ann")
    make_user("bob")
    ann, bob = logged_in_session(live_server, "ann"), logged_in_session(live_server, "bob")
    held.extend([_open(ann, live_server), _open(bob, live_server)])
    assert [r.status_code for r in held] == [200, 200]
    _assert_refused(_open(bob, live_server), 503, "as many live update streams open as it can take")


def test_a_closed_stream_gives_its_slot_back(app, live_server):
    app.config.update(EVENTS_MAX_PER_USER=1)
    make_user("ann")
    ann = logged_in_session(live_server, "ann")
    first = _open(ann, live_server)
    assert first.status_code == 200
    assert _open(ann, live_server).status_code == 429
    first.close()

    def reopened():
        response = _open(ann, live_server)
        response.close()
        return response.status_code == 200

    # The server notices the closed connection at its next keep-alive (EVENTS_HEARTBEAT).
    wait_for(reopened, interval=0.2, message="the closed stream's slot")


@pytest.mark.once
def test_a_page_whose_stream_is_refused_polls_slowly_and_does_not_retry_at_once(
        app, live_server, live_context, held):
    """The page's own script against a real refusal: one /events request, then polling at
    its idle pace, and the stream tried again only a minute later (not the 1 s reconnect an
    EventSource makes after a dropped stream)."""
    app.config.update(EVENTS_MAX_PER_USER=1)
    make_user("susan")
    held.append(_open(logged_in_session(live_server, "susan"), live_server))
    assert held[0].status_code == 200  # another tab's stream holds the only slot
    page, watcher, requests_made = live_browser_tests.open_page(live_context, url="/auth/login")
    browser_tests.log_in(page)  # to /index: one page load
    page.wait_for_function("() => window.__streams.length > 0 && "
                           f"window.__streams[0].readyState === {live_browser_tests.CLOSED}")
    page.wait_for_timeout(8000)  # far longer than the 1 s an EventSource waits to reconnect
    assert len(requests_made.to("/events")) == 1, requests_made.seen
    assert 1 <= len(requests_made.to("/notifications")) <= 2, requests_made.seen
    assert len(page.evaluate(live_browser_tests.STREAMS)) == 1
    refused = [e for e in watcher.errors if "/events" in e]
    assert refused and all("HTTP 429" in e for e in refused), watcher.errors
