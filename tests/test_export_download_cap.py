"""Downloads of export files one user may have running at once (EXPORT_DOWNLOADS_PER_USER):
each holds a connection of its web process for as long as the client reads, like an /events
stream. Real HTTP against the live server, a file large enough that a download not read
stays open."""

from __future__ import annotations

import pytest
import requests

import tests.test_browser as browser_tests
from app.exports.storage import get_storage
from tests.conftest import wait_for
from tests.test_events import logged_in_session
from tests.test_export_pages import finished_export, susan  # noqa: F401 -- a fixture

live_server = browser_tests.live_server
FILE_SIZE = 32 * 1024 * 1024  # more than the socket buffers hold: the sender waits


@pytest.fixture
def config_overrides():
    return {"SERVER_NAME": None, "EXPORT_DOWNLOADS_PER_USER": 2}


def _download(session: requests.Session, url: str, **headers) -> requests.Response:
    return session.get(url, stream=True, timeout=(5, 30), allow_redirects=False,
                       headers=headers)


def test_downloads_past_the_per_user_cap_are_refused_until_one_ends(app, client, susan,  # noqa: F811
                                                                     live_server):
    from tests.conftest import login

    login(client)
    export = finished_export(client)
    with open(get_storage().path(export.storage_key), "wb") as f:
        f.truncate(FILE_SIZE)
    url = f"{live_server}/exports/{export.id}/download"
    session = logged_in_session(live_server, "susan")
    running = [_download(session, url) for _ in range(2)]
    try:
        assert [r.status_code for r in running] == [200, 200]
        refused = _download(session, url, Accept="application/json")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "15"
        assert "2 downloads running already" in refused.json()["message"]
        # In a browser: back to the export centre, which says why.
        page = _download(session, url)
        assert page.status_code == 302 and page.headers["Location"].endswith("/exports")
        assert "2 downloads running already" in session.get(f"{live_server}/exports").text
        # A download read to its end gives its place back.
        whole = sum(len(chunk) for chunk in running.pop().iter_content(1 << 20))
        assert whole == FILE_SIZE

        def third_starts():
            response = _download(session, url)
            running.append(response)
            return response.status_code == 200

        wait_for(third_starts, timeout=30, interval=0.5, message="a place given back")
    finally:
        for response in running:
            response.close()
