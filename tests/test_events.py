"""Live push (GET /events): the stream a page holds open, read over real HTTP from a live
server, fed by a real Redis and, for tasks, a real `rq worker` process. Runs on every
database of the matrix: the stream reads the tasks' state from it."""

from __future__ import annotations

import json
import time

import pytest
import requests

import tests.test_browser as browser_tests
from tests.conftest import CSRF, make_user, start_worker, stop_process

live_server = browser_tests.live_server
PASSWORD = "correct horse battery"


@pytest.fixture
def config_overrides():
    # Reached as 127.0.0.1 (no fixed SERVER_NAME); a heartbeat often enough to watch.
    return {"SERVER_NAME": None, "EVENTS_HEARTBEAT": 0.5, "EVENTS_MAX_AGE": 600}


class EventStream:
    """A client of /events as EventSource is one: reads `id:`, `event:`, `data:` fields and
    comments from the response, and remembers the last event id."""

    def __init__(self, session: requests.Session, url: str, last_event_id: str | None = None):
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.response = session.get(url, headers=headers, stream=True, timeout=(5, 10))
        self.lines = self.response.iter_lines(decode_unicode=True)
        self.last_id: str | None = None
        self.closed = False

    def next_event(self) -> dict | None:
        """The next event as {"id", "event", "data"}; None when the server ended the stream."""
        fields: dict = {}
        for line in self.lines:
            if line == "":
                if "data" in fields:
                    if "id" in fields:
                        self.last_id = fields["id"]
                    fields.setdefault("event", "message")
                    fields["data"] = json.loads(fields["data"])
                    return fields
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        self.closed = True
        return None

    def next_comment(self) -> str:
        """Read on to the next comment line (events in between are dropped)."""
        for line in self.lines:
            if line.startswith(":"):
                return line
        raise AssertionError("stream ended without a comment")

    def until(self, predicate, timeout: float = 30) -> list[dict]:
        """Events read until one satisfies `predicate` (that one last)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next_event()
            if event is None:
                raise AssertionError(f"stream ended; events so far: {seen}")
            seen.append(event)
            if predicate(event):
                return seen
        raise AssertionError(f"no matching event within {timeout}s; events: {seen}")

    def close(self) -> None:
        self.response.close()


def logged_in_session(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/auth/login").text
    match = CSRF.search(page)
    response = session.post(f"{base}/auth/login", allow_redirects=False, data={
        "username": username, "password": PASSWORD,
        "csrf_token": match.group(1) or match.group(2)})
    assert response.status_code == 302, response.text
    return session


def notify(username: str, name: str, data, topic: str | None = None) -> None:
    """What the app does when something happens to a user: a notification, committed."""
    import sqlalchemy as sa

    from app import db
    from app.models import User

    user = db.session.scalar(sa.select(User).where(User.username == username))
    user.add_notification(name, data, topic=topic)
    db.session.commit()


def test_an_anonymous_visitor_gets_401_not_the_login_page(app, live_server):
    response = requests.get(f"{live_server}/events", allow_redirects=False, timeout=60)
    assert response.status_code == 401
    assert "Log in" in response.text


def test_the_stream_starts_with_the_current_state_then_pushes_each_notification(
        app, live_server):
    from app import db
    from app.models import Message

    susan, john = make_user("susan"), make_user("john")
    db.session.add_all(Message(author=john, recipient=susan, body=f"hi {i}") for i in range(3))
    db.session.commit()
    session = logged_in_session(live_server, "susan")
    stream = EventStream(session, f"{live_server}/events")
    try:
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        first = stream.next_event()
        assert first["data"]["name"] == "unread_message_count"
        assert first["data"]["data"] == 3
        notify("susan", "unread_message_count", 4)
        pushed = stream.until(lambda e: e["data"]["data"] == 4)[-1]
        assert pushed["id"] and pushed["id"] != first["id"]
        # Idle, the stream sends keep-alive comments (every EVENTS_HEARTBEAT seconds).
        assert stream.next_comment() == ": keep-alive"
    finally:
        stream.close()


def test_a_rolled_back_notification_is_never_pushed(app, live_server):
    from app import db

    make_user("susan")
    session = logged_in_session(live_server, "susan")
    stream = EventStream(session, f"{live_server}/events")
    try:
        stream.next_event()  # the current state
        import sqlalchemy as sa

        from app.models import User

        user = db.session.scalar(sa.select(User).where(User.username == "susan"))
        user.add_notification("unread_message_count", 99)
        db.session.rollback()
        notify("susan", "unread_message_count", 5)
        pushed = stream.until(lambda e: e["data"]["name"] == "unread_message_count")
        assert [e["data"]["data"] for e in pushed] == [5]
    finally:
        stream.close()


def test_one_user_never_receives_another_users_events(app, live_server):
    make_user("susan")
    make_user("mallory")
    susan = logged_in_session(live_server, "susan")
    mallory = logged_in_session(live_server, "mallory")
    susan_stream = EventStream(susan, f"{live_server}/events")
    susan_stream.next_event()
    notify("susan", "unread_message_count", 7)
    secret_id = susan_stream.until(lambda e: e["data"]["data"] == 7)[-1]["id"]
    # Mallory presents Susan's event id: her own log does not hold it, so she gets her own
    # current state, not Susan's events; and nothing in the URL names a user or channel.
    stream = EventStream(mallory, f"{live_server}/events?user=1&channel=microblog:events:1",
                         last_event_id=secret_id)
    try:
        first = stream.next_event()
        assert (first["data"]["name"], first["data"]["data"]) == ("unread_message_count", 0)
        notify("susan", "unread_message_count", 8)
        notify("mallory", "unread_message_count", 1)
        seen = stream.until(lambda e: e["data"]["data"] == 1)
        assert all(e["data"]["data"] in (0, 1) for e in seen), seen
    finally:
        stream.close()
        susan_stream.close()


def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(app, live_server):
    make_user("susan")
    session = logged_in_session(live_server, "susan")
    stream = EventStream(session, f"{live_server}/events")
    stream.next_event()
    notify("susan", "unread_message_count", 1)
    stream.until(lambda e: e["data"]["data"] == 1)
    last_id = stream.last_id
    stream.close()
    # While away: two more, the last one a task's terminal state.
    notify("susan", "unread_message_count", 2)
    notify("susan", "task_progress", {"task_id": "t1", "status": "finished", "progress": 100},
           topic="t1")
    again = EventStream(session, f"{live_server}/events", last_event_id=last_id)
    try:
        replayed = again.until(lambda e: e["data"]["name"] == "task_progress")
        assert [e["data"]["data"] for e in replayed] == [
            2, {"task_id": "t1", "status": "finished", "progress": 100}]
    finally:
        again.close()


def test_an_unknown_or_malformed_last_event_id_gets_the_current_state(app, live_server):
    make_user("susan")
    notify("susan", "task_progress", {"task_id": "t1", "status": "running"}, topic="t1")
    session = logged_in_session(live_server, "susan")
    for bad in ("999999999999-0", "not-an-id", "1-2-3", "' OR 1=1"):
        stream = EventStream(session, f"{live_server}/events", last_event_id=bad)
        try:
            assert stream.response.status_code == 200
            assert stream.next_event()["data"]["name"] == "unread_message_count"
        finally:
            stream.close()


def test_logout_ends_the_stream_of_that_browser_only(app, live_server):
    make_user("susan")
    laptop = logged_in_session(live_server, "susan")
    phone = logged_in_session(live_server, "susan")
    laptop_stream = EventStream(laptop, f"{live_server}/events")
    phone_stream = EventStream(phone, f"{live_server}/events")
    laptop_stream.next_event()
    phone_stream.next_event()
    page = laptop.get(f"{live_server}/auth/logout").text
    match = CSRF.search(page)
    laptop.post(f"{live_server}/auth/logout", data={"csrf_token": match.group(1) or match.group(2)})
    try:
        ended = laptop_stream.until(lambda e: e["event"] == "logout")
        assert ended[-1]["event"] == "logout"
        assert laptop_stream.next_event() is None  # and the server closed it
        # The other browser's stream goes on.
        notify("susan", "unread_message_count", 6)
        assert phone_stream.until(lambda e: e["data"]["data"] == 6)
        # Reconnecting with the old cookies is refused.
        assert laptop.get(f"{live_server}/events", timeout=60).status_code == 401
    finally:
        laptop_stream.close()
        phone_stream.close()


def test_without_redis_the_stream_answers_503_and_the_site_still_works(app, live_server):
    from app.redis_connection import redis_from_url

    make_user("susan")
    session = logged_in_session(live_server, "susan")
    app.redis = redis_from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)  # refused
    response = session.get(f"{live_server}/events", timeout=20)
    assert response.status_code == 503
    assert "unavailable" in response.text
    # The page's fallback: polling /notifications, which needs only the database.
    assert session.get(f"{live_server}/notifications?since=0", timeout=60).status_code == 200


def test_a_running_task_pushes_progress_counts_and_its_end(app, live_server):
    """The bar's whole life through the stream, from a real worker: running with counts and
    an estimate, then finished, with ids that only grow."""
    import sqlalchemy as sa

    from app import db
    from app.models import User

    make_user("susan")
    session = logged_in_session(live_server, "susan")
    stream = EventStream(session, f"{live_server}/events")
    stream.next_event()
    user = db.session.scalar(sa.select(User).where(User.username == "susan"))
    task = user.launch_task("countdown", "Counting", 3)
    worker = start_worker()
    try:
        seen = stream.until(lambda e: e["data"]["name"] == "task_progress"
                            and e["data"]["data"]["status"] == "finished", timeout=60)
    finally:
        stream.close()
        stop_process(worker)
    progress = [e["data"]["data"] for e in seen if e["data"]["name"] == "task_progress"]
    assert all(p["task_id"] == task.id for p in progress)
    running = [p for p in progress if p["status"] == "running" and p.get("done")]
    assert running, progress
    assert running[-1]["total"] == 3 and running[-1]["unit"] == "seconds"
    assert "eta" in running[-1]
    ids = [tuple(map(int, e["id"].split("-"))) for e in seen]
    assert ids == sorted(ids)


def test_another_site_on_the_same_redis_server_never_reaches_the_stream(app, live_server):
    """Pub/sub channels are shared by all databases of a Redis server: a site using another
    database number, with a user of the same id, must not feed this site's streams."""
    import redis

    from app import events

    susan = make_user("susan")
    session = logged_in_session(live_server, "susan")
    stream = EventStream(session, f"{live_server}/events")
    pool = app.redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["db"] = kwargs.get("db", 0) + 5
    other_site = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))
    try:
        stream.next_event()
        events.publish(other_site, susan.id, events.event("unread_message_count", 666))
        notify("susan", "unread_message_count", 1)
        seen = stream.until(lambda e: e["data"]["data"] == 1)
        assert [e["data"]["data"] for e in seen] == [1]
    finally:
        stream.close()
        other_site.delete(events.log_key(susan.id))
        other_site.close()


def test_an_out_of_range_last_event_id_gets_the_current_state_not_503(app, live_server):
    """Ids past what a Redis stream id can hold (64-bit parts) are unknown ids like any other:
    the stream opens with the current state."""
    from app import db
    from app.models import Message

    susan, john = make_user("susan"), make_user("john")
    db.session.add_all(Message(author=john, recipient=susan, body=f"hi {i}") for i in range(2))
    db.session.commit()
    notify("susan", "unread_message_count", 2)  # the log exists
    session = logged_in_session(live_server, "susan")
    for bad in ("99999999999999-0", "99999999999999999999-0", "18446744073709551616-0",
                "1-99999999999999999999", "0-0"):
        stream = EventStream(session, f"{live_server}/events", last_event_id=bad)
        try:
            assert stream.response.status_code == 200, (bad, stream.response.text)
            first = stream.next_event()
            assert (first["data"]["name"], first["data"]["data"]) == (
                "unread_message_count", 2), bad
        finally:
            stream.close()
