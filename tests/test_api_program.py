"""The API end to end, as a program uses it: a real gunicorn serving microblog:app, a real
`rq worker`, and `requests`. A token from the username and password, an export started with
an Idempotency-Key, polled with its ETag until done, downloaded and compared with the posts;
the event stream by token reporting the export's end, and ending when the token is revoked."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
import sqlalchemy as sa

from app import db
from app.models import Post
from tests.conftest import make_user, start_worker, stop_process, wait_for
from tests.test_events import EventStream
from tests.web_server import gunicorn

PASSWORD = "correct horse battery"
# Polls as fast as a test wants them; beat often, so a revoked token's stream ends soon.
SERVER_ENV = {"RATELIMIT_API": "100000 per minute", "EVENTS_HEARTBEAT": 1}


@pytest.fixture
def server(app):
    with gunicorn(**SERVER_ENV) as running:
        yield running


@pytest.fixture
def worker(app):
    proc = start_worker()
    yield proc
    stop_process(proc)


def _token(base: str, username: str) -> str:
    response = requests.post(f"{base}/api/tokens", auth=(username, PASSWORD), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def test_a_program_exports_its_posts_polling_with_etags(app, server, worker):
    make_user("susan", posts=[f"a post, number {n}" for n in range(30)])
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {_token(server.base, 'susan')}"

    key = str(uuid.uuid4())
    started = api.post(f"{server.base}/api/exports", json={"format": "json"},
                       headers={"Idempotency-Key": key}, timeout=60)
    assert started.status_code == 202, started.text
    # The answer got lost? The same request again is the same export, not a second one.
    again = api.post(f"{server.base}/api/exports", json={"format": "json"},
                     headers={"Idempotency-Key": key}, timeout=60)
    assert again.headers["Location"] == started.headers["Location"]
    location = server.base + started.headers["Location"]

    answers: list[tuple[int, str, str | None]] = []  # status, ETag answered, ETag sent
    etag, export = None, started.json()

    def finished() -> bool:
        nonlocal etag, export
        response = api.get(location, headers={"If-None-Match": etag} if etag else {},
                           timeout=60)
        assert response.status_code in (200, 304), response.text
        answers.append((response.status_code, response.headers["ETag"], etag))
        if response.status_code == 200:
            etag, export = response.headers["ETag"], response.json()
        return export["status"] in ("finished", "failed", "cancelled")

    wait_for(finished, interval=0.2, message="the export to finish")
    assert export["status"] == "finished", export
    # A 200 always brings news (an ETag the client did not have), a 304 none.
    assert all((answered != sent) == (status == 200) for status, answered, sent in answers)

    download = api.get(server.base + export["links"]["download"], timeout=60)
    assert download.status_code == 200
    exported = [p["body"] for p in json.loads(download.content)["posts"]]
    bodies = db.session.scalars(sa.select(Post.body).order_by(Post.timestamp, Post.id)).all()
    assert sorted(exported) == sorted(bodies) and len(exported) == 30


def test_the_event_stream_by_token_follows_an_export_and_ends_with_the_token(
        app, server, worker):
    make_user("susan", posts=["one", "two"])
    secret = _token(server.base, "susan")
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {secret}"
    stream = EventStream(api, f"{server.base}/api/events")
    try:
        first = stream.next_event()
        assert first["data"]["name"] == "unread_message_count"  # the current state first
        api.post(f"{server.base}/api/exports", json={"format": "csv"}, timeout=60)
        stream.until(lambda e: e["data"]["name"] == "task_progress"
                     and e["data"]["data"]["status"] == "finished", timeout=120)
        assert api.delete(f"{server.base}/api/tokens", timeout=60).status_code == 204
        deadline = time.monotonic() + 60
        ending = None
        while time.monotonic() < deadline and not stream.closed:
            try:
                event = stream.next_event()
            except requests.exceptions.ConnectionError:  # read timeout: keep waiting
                continue
            if event is not None and event["event"] == "logout":
                ending = event
                break
        assert ending is not None, "the stream went on after its token was revoked"
    finally:
        stream.close()
