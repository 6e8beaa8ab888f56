"""The import as a program drives it, over HTTP, against a real gunicorn and a real `rq worker`:
a token from the tutorial's POST /api/tokens (HTTP Basic), the archive uploaded with an
Idempotency-Key (and uploaded again with the same key, as a client that lost the answer
does: the same import, once), the import polled with If-None-Match until its preview is
ready (mostly 304s), confirmed, polled until finished, and the account's posts, read back
through /api/posts page by page, are the archive's."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import requests

from tests.conftest import EVENT_TIMEOUT, make_user
from tests.test_browser import Worker
from tests.web_server import gunicorn

POSTS = 120


def archive() -> tuple[bytes, list[str]]:
    """posts.json as our export writes it, POSTS posts a minute apart."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    bodies = [f"archived post {n}: {'ünïcode ' if n % 7 == 0 else ''}words" for n in range(POSTS)]
    posts = [{"id": n + 1, "body": body, "language": "en",
              "timestamp": (start + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")}
             for n, body in enumerate(bodies)]
    document = {"format": "microblog-posts", "version": 1, "user": "susan",
                "exported_at": "2024-04-01T00:00:00Z", "posts": posts}
    return json.dumps(document).encode(), bodies


class Poller:
    """GET with If-None-Match until `done(body)`, counting the 200s and the 304s."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session, self.url = session, url
        self.etag: str | None = None
        self.body: dict = {}
        self.answers = {200: 0, 304: 0}

    def until(self, done, timeout: float = EVENT_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            headers = {"If-None-Match": self.etag} if self.etag else {}
            response = self.session.get(self.url, headers=headers, timeout=60)
            assert response.status_code in (200, 304), response.text
            self.answers[response.status_code] += 1
            if response.status_code == 200:
                self.etag, self.body = response.headers["ETag"], response.json()
            if done(self.body):
                return self.body
            assert time.monotonic() < deadline, f"still {self.body.get('status')}: {self.body}"
            time.sleep(0.2)


def test_a_program_imports_an_archive_with_a_token_an_idempotency_key_and_etag_polls(app):
    make_user("susan")
    content, bodies = archive()
    worker = Worker(app)
    with gunicorn() as server:
        worker.wait_ready()
        api = f"{server.base}/api"
        token = requests.post(f"{api}/tokens", auth=("susan", "correct horse battery"),
                              timeout=60)
        assert token.status_code == 200, token.text
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['token']}"

        def upload() -> requests.Response:
            return session.post(f"{api}/imports", headers={"Idempotency-Key": "backup-2024"},
                                files={"file": ("posts.json", content)}, timeout=60)

        first = upload()
        assert first.status_code == 202, first.text
        again = upload()  # the client lost the answer and sends it again (a new boundary)
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        location = server.base + first.headers["Location"]

        polls = Poller(session, location)
        ready = polls.until(lambda body: body.get("status") not in (None, "previewing"))
        assert ready["status"] == "ready", ready
        assert ready["preview"]["posts"] == POSTS and ready["preview"]["already"] == 0

        confirmed = session.post(server.base + ready["links"]["confirm"],
                                 headers={"Idempotency-Key": "backup-2024-confirm"}, timeout=60)
        assert confirmed.status_code == 202, confirmed.text
        done = polls.until(lambda body: body.get("status") not in ("ready", "importing"))
        assert done["status"] == "finished", done
        assert done["summary"]["imported"] == POSTS and done["summary"]["failed"] == 0
        # Polling with the ETag: a 200 when something changed, a 304 otherwise. Once the
        # import (and its task's mail) is over, nothing changes: 304s, with no body.
        seen = polls.answers[304]
        polls.until(lambda body: polls.answers[304] > seen)
        assert polls.answers[200] >= 3

        mine, url = [], f"{api}/posts?list=mine&limit=50"
        while url:
            page = session.get(url, timeout=60)
            assert page.status_code == 200, page.text
            mine += page.json()
            url = page.links.get("next", {}).get("url")
            url = server.base + url if url and url.startswith("/") else url
        history = session.get(f"{api}/imports", timeout=60).json()
    worker.stop()
    assert sorted(post["body"] for post in mine) == sorted(bodies)
    assert [i["id"] for i in history] == [first.json()["id"]]
    print(f"polls: {polls.answers[200]} answered 200, {polls.answers[304]} answered 304")
