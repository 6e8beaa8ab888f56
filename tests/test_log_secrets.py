"""A password reset link carries its token in the path: whoever reads the logs must not be
able to use it. gunicorn's access log and the app's own lines write the route instead."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.models import User
from tests.conftest import make_user, wait_for, worker_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, **kwargs) -> requests.Response | None:
    try:
        return requests.get(url, timeout=30, **kwargs)  # the worker may still be loading the app
    except requests.RequestException:
        return None


def test_gunicorn_access_log_has_the_reset_route_not_its_token(app, tmp_path):
    token = make_user("bob").get_reset_password_token()
    port = free_port()
    access_log = tmp_path / "access.log"
    env = worker_env(WEB_CONCURRENCY=1, GUNICORN_BIND=f"127.0.0.1:{port}",
                     GUNICORN_ACCESS_LOG=str(access_log))
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "microblog:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/health"), timeout=60, message="gunicorn")
        link = f"{base}/auth/reset_password/{token}"
        page = _get(link)
        assert page.status_code == 200 and "Reset Your Password" in page.text  # a real token
        # What the page loads sends the link as its Referer.
        assert _get(f"{base}/static/css/microblog.css", headers={"Referer": link}) is not None
        lines = wait_for(lambda: [line for line in access_log.read_text().splitlines()
                                  if "microblog.css" in line], timeout=10, message="log lines")
    finally:
        os.killpg(web.pid, signal.SIGINT)
        web.wait(timeout=30)
    log = access_log.read_text()
    assert token not in log
    assert '"GET /auth/reset_password/<token> HTTP/1.1" 200' in log
    assert f'"{base}/auth/reset_password/<token>"' in lines[0]


@pytest.fixture
def config_overrides():
    return {"PROPAGATE_EXCEPTIONS": False}  # a failing view answers 500 and is logged


def test_an_error_on_the_reset_page_is_logged_without_the_token(app, client, caplog,
                                                                monkeypatch):
    token = make_user("bob").get_reset_password_token()

    def broken(token):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(User, "verify_reset_password_token", staticmethod(broken))
    with caplog.at_level(logging.ERROR):
        assert client.get(f"/auth/reset_password/{token}").status_code == 500
    messages = [record.getMessage() for record in caplog.records]
    assert "Exception on /auth/reset_password/<token> [GET]" in messages
    assert not any(token in text for text in messages + [caplog.text])
