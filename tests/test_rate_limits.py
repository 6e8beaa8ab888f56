"""Rate limits (app/security/limits.py): what a hammering client sees (a 429 page or JSON saying
when to try again), who shares a budget (an address for anonymous forms, an account for logged-in
actions), a reset request that tells nothing about which addresses exist, a Redis that goes
away, and one budget across gunicorn's worker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from app import db
from app.models import Message
from tests.conftest import (
    CSRF,
    EVENT_TIMEOUT,
    ROOT,
    browser,
    csrf_token,
    free_port,
    login,
    make_user,
    queues_on,
    wait_for,
    worker_env,
)

# The limits are counted in Redis, whatever the database: CI runs it once
# (SQLite).
pytestmark = pytest.mark.once

LIMITED = dict(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3 per minute",
               RATELIMIT_REGISTER="2 per minute", RATELIMIT_RESET_PASSWORD="2 per minute",
               RATELIMIT_SEND_MESSAGE="2 per minute", RATELIMIT_EXPORT="1 per minute")


@pytest.fixture
def config_overrides():
    return dict(LIMITED)


def from_address(address: str) -> dict:
    """A browser's request from that address (a browser asks for HTML first)."""
    return {"environ_base": {"REMOTE_ADDR": address,
                             "HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}}


def post_login(client, username="susan", password="wrong password", address="10.0.0.1"):
    return client.post("/auth/login", data={
        "username": username, "password": password, "csrf_token": csrf_token(client)},
        **from_address(address))


def assert_limited(response, json=False) -> None:
    """A 429 that says when to try again, in words and in Retry-After."""
    assert response.status_code == 429, response.get_data(as_text=True)[:500]
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 60
    if json:
        body = response.get_json()
        assert body["error"] == "Too Many Requests"
        assert body["retry_after"] == seconds
        assert "try again in" in body["message"]
    else:
        html = response.get_data(as_text=True)
        assert "Too Many Requests" in html
        assert re.search(r"Please try again in \d+ (second|minute)s?\.", html), html
        assert '<nav' in html  # the site's own page, in its layout


# --------------------------------------------------------------------------- login

def test_failed_logins_from_one_address_are_limited_then_refused_with_a_429_page(client, user):
    for _ in range(3):
        assert post_login(client).status_code == 302
    assert_limited(post_login(client))
    # The right password does not get through either from that address for now...
    assert_limited(post_login(client, password="correct horse battery"))
    # ...but the page itself still shows, and another address and user may log in.
    assert client.get("/auth/login").status_code == 200
    make_user("other")
    other = browser(client.application)
    assert post_login(other, "other", "correct horse battery", "10.0.0.2").status_code == 302


def test_guessing_one_username_from_many_addresses_gets_one_guess_per_address(client, user):
    """Once the account has had its failures, an address that has failed for it is refused
    (in any case of the name); one that has not gets one attempt, then is refused too."""
    for i in range(3):
        assert post_login(client, "SUSAN", address=f"10.0.1.{i}").status_code == 302
    assert_limited(post_login(client, "susan", address="10.0.1.0"))
    assert post_login(client, "susan", address="10.0.1.99").status_code == 302
    assert_limited(post_login(client, "Susan", address="10.0.1.99"))
    assert_limited(post_login(client, "susan", "correct horse battery", "10.0.1.99"))
    assert post_login(client, "susan", "correct horse battery", "10.0.1.100").location == "/index"


def test_wrong_passwords_from_one_address_do_not_lock_the_owner_out_from_another(client, app):
    make_user("carol")
    for _ in range(3):
        assert post_login(client, "carol", address="203.0.113.5").status_code == 302
    for password in ("wrong password", "correct horse battery"):
        assert_limited(post_login(client, "carol", password, address="203.0.113.5"))

    carol = browser(app)
    response = post_login(carol, "carol", "correct horse battery", address="198.51.100.20")
    assert response.status_code == 302 and response.location == "/index"
    assert "Hi, carol!" in carol.get("/index").get_data(as_text=True)
    # The guessing address stays refused, for this account and (its own budget) for any.
    assert_limited(post_login(client, "carol", "correct horse battery", "203.0.113.5"))
    make_user("dave")
    assert_limited(post_login(client, "dave", "correct horse battery", "203.0.113.5"))


@pytest.mark.parametrize("config_overrides", [dict(LIMITED, TRUSTED_PROXY_COUNT=1)])
def test_behind_a_proxy_the_owner_logs_in_while_another_client_guesses(client, app):
    def through_proxy(browser_client, client_address, password):
        request = from_address("127.0.0.1")
        request["environ_base"]["HTTP_X_FORWARDED_FOR"] = client_address
        return browser_client.post("/auth/login", data={
            "username": "carol", "password": password,
            "csrf_token": csrf_token(browser_client)}, **request)

    make_user("carol")
    for _ in range(3):
        assert through_proxy(client, "203.0.113.5", "wrong").status_code == 302
    assert through_proxy(client, "203.0.113.5", "wrong").status_code == 429
    owner = through_proxy(browser(app), "198.51.100.20", "correct horse battery")
    assert owner.location == "/index"


def test_a_forged_forwarded_for_header_does_not_buy_a_new_budget(client, user):
    for i in range(3):
        request = from_address("10.0.0.1")
        request["environ_base"]["HTTP_X_FORWARDED_FOR"] = f"192.0.2.{i}"
        assert client.post("/auth/login", data={
            "username": f"guess{i}", "password": "x", "csrf_token": csrf_token(client)},
            **request).status_code == 302
    assert_limited(post_login(client, "another"))


@pytest.mark.parametrize("config_overrides", [dict(LIMITED, TRUSTED_PROXY_COUNT=1)])
def test_behind_a_proxy_each_client_address_has_its_own_budget(client, user):
    """nginx (one proxy) connects from 127.0.0.1 for everyone and appends the client's
    address to X-Forwarded-For; whatever the client put before it is not trusted."""
    def through_proxy(client_address, username, forged=""):
        request = from_address("127.0.0.1")
        request["environ_base"]["HTTP_X_FORWARDED_FOR"] = forged + client_address
        return client.post("/auth/login", data={
            "username": username, "password": "x", "csrf_token": csrf_token(client)}, **request)

    for i in range(3):
        assert through_proxy("198.51.100.7", f"u{i}", forged=f"10.9.9.{i}, ").status_code == 302
    assert through_proxy("198.51.100.7", "u3").status_code == 429
    assert through_proxy("198.51.100.8", "u4").status_code == 302


def test_successful_logins_do_not_count(app, user):
    for _ in range(5):
        assert post_login(browser(app), password="correct horse battery").status_code == 302


def test_a_limited_request_that_accepts_json_gets_json(client, user):
    for _ in range(3):
        post_login(client)
    response = client.post("/auth/login", data={
        "username": "susan", "password": "x", "csrf_token": csrf_token(client)},
        headers={"Accept": "application/json"}, **from_address("10.0.0.1"))
    assert_limited(response, json=True)


def test_the_429_page_speaks_the_visitors_language(app, user):
    client = browser(app)  # a locale of its own per request
    for _ in range(3):
        post_login(client)
    request = from_address("10.0.0.1")
    request["environ_base"]["HTTP_ACCEPT_LANGUAGE"] = "es"
    response = client.post("/auth/login", data={
        "username": "susan", "password": "x", "csrf_token": csrf_token(client)}, **request)
    assert response.status_code == 429
    assert "Vuelva a intentarlo dentro de 1 minuto." in response.get_data(as_text=True)


# --------------------------------------------------------------------------- register, reset

def test_registrations_are_limited_per_address(client):
    def register(name, address):
        return client.post("/auth/register", data={
            "username": name, "email": f"{name}@example.com", "password": "a long password",
            "password2": "a long password", "csrf_token": csrf_token(client, "/auth/register")},
            **from_address(address))

    assert register("one", "10.0.2.1").status_code == 302
    assert register("two", "10.0.2.1").status_code == 302
    assert_limited(register("three", "10.0.2.1"))
    assert register("four", "10.0.2.2").status_code == 302


def reset_request(client, email, address="10.0.3.1"):
    return client.post("/auth/reset_password_request", data={
        "email": email, "csrf_token": csrf_token(client, "/auth/reset_password_request")},
        **from_address(address))


def test_reset_requests_are_limited_per_address_and_per_email(client, user):
    assert reset_request(client, "susan@example.com", "10.0.3.1").status_code == 302
    assert reset_request(client, "nobody@example.com", "10.0.3.1").status_code == 302
    assert_limited(reset_request(client, "third@example.com", "10.0.3.1"))  # the address
    assert reset_request(client, "susan@example.com", "10.0.3.2").status_code == 302
    assert_limited(reset_request(client, " Susan@Example.com", "10.0.3.3"))  # the address typed
    # An unknown address runs out the same way: the limit tells nothing about who exists.
    assert reset_request(client, "nobody@example.com", "10.0.3.4").status_code == 302
    assert_limited(reset_request(client, "nobody@example.com", "10.0.3.5"))


def answer(client, email) -> tuple:
    response = reset_request(client, email)
    page = client.get(response.location)
    flashes = re.findall(r'<div class="alert[^"]*"[^>]*>(.*?)<button',
                         page.get_data(as_text=True), flags=re.S)
    return response.status_code, response.location, page.status_code, [
        " ".join(f.split()) for f in flashes]


@pytest.mark.parametrize("config_overrides", [{}])
def test_a_reset_request_answers_the_same_whether_or_not_the_address_exists(
        app, user, dead_smtp_port, tmp_path):
    """Same status, same page, same message; even when the mail cannot be sent at all (job
    queue and mail server both down), which used to be a 500 for real addresses only."""
    from redis import Redis

    known = answer(browser(app), "susan@example.com")
    unknown = answer(browser(app), "nobody@example.com")
    assert known == unknown
    assert known[:3] == (302, "/auth/login", 200)
    assert known[3] == ["Check your email for the instructions to reset your password"]

    queues_on(app, Redis.from_url(f"unix://{tmp_path}/no-redis.sock", socket_connect_timeout=1))
    assert answer(browser(app), "susan@example.com") == unknown


# --------------------------------------------------------------------------- logged-in actions

def send(client, recipient="bob", body="hello"):
    return client.post(f"/send_message/{recipient}", data={
        "message": body, "csrf_token": csrf_token(client, f"/send_message/{recipient}")},
        **from_address("10.0.4.1"))


def test_messages_are_limited_per_user_not_per_address(app, user):
    make_user("bob")
    make_user("carol")
    susan, carol = browser(app), browser(app)
    login(susan)
    login(carol, "carol")
    assert send(susan).status_code == 302
    assert send(susan).status_code == 302
    assert_limited(send(susan))
    # Carol, behind the same address, has her own budget.
    assert send(carol).status_code == 302
    assert db.session.scalar(sa.select(sa.func.count(Message.id))) == 3
    assert send(susan).status_code == 429  # and a refused message is not stored
    assert db.session.scalar(sa.select(sa.func.count(Message.id))) == 3


def test_guessing_the_current_password_on_the_change_password_page_is_limited(app, user):
    client = browser(app)
    login(client)

    def change(current):
        token = csrf_token(client, "/auth/change_password")
        return client.post("/auth/change_password", data={
            "current_password": current, "password": "a fresh long password",
            "password2": "a fresh long password", "csrf_token": token},
            **from_address("10.0.6.1"))

    for guess in ("one", "two", "three"):
        assert change(guess).status_code == 200  # the form again, with its error
    assert_limited(change("correct horse battery"))


def test_export_launches_are_limited_per_user(app, user):
    make_user("carol")
    susan, carol = browser(app), browser(app)
    login(susan)
    login(carol, "carol")

    def export(client):
        token = csrf_token(client, "/index")
        return client.post("/export_posts", data={"csrf_token": token}, **from_address("10.0.5.1"))

    assert export(susan).status_code == 302
    assert_limited(export(susan))
    assert export(carol).status_code == 302


# --------------------------------------------------------------------------- settings

def test_limits_come_from_the_environment():
    env = worker_env(RATELIMIT_LOGIN="7 per minute;70 per day", RATELIMIT_ENABLED="false",
                     RATELIMIT_EXPORT="2 per hour")
    code = ("from config import Config as C; print(C.RATELIMIT_ENABLED, C.RATELIMIT_LOGIN, "
            "C.RATELIMIT_EXPORT, C.RATELIMIT_REGISTER, sep='|')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "False|7 per minute;70 per day|2 per hour|10 per minute;50 per hour"


@pytest.mark.parametrize("config_overrides", [dict(LIMITED, RATELIMIT_ENABLED=False)])
def test_limits_can_be_turned_off(client, user):
    for _ in range(6):
        assert post_login(client).status_code == 302


@pytest.mark.parametrize("redis_url, uri, options", [
    ("unix:///srv/mb/redis.sock", "redis+unix:///srv/mb/redis.sock", {}),
    ("unix:///srv/mb/redis.sock?db=2", "redis+unix:///srv/mb/redis.sock?db=2", {}),
    ("redis://:pw@cache:6379/1", "redis://:pw@cache:6379/1", {}),
    ("rediss://:pw@cache.example.com:6380/0", "rediss://:pw@cache.example.com:6380/0", {}),
    ("redis+sentinel://s1:26379,s2:26379/mymaster/3", "redis+sentinel://s1:26379,s2:26379/mymaster",
     {"db": 3, "use_replicas": False}),
    ("redis+sentinel://s1:26379/mymaster", "redis+sentinel://s1:26379/mymaster",
     {"use_replicas": False}),
])
def test_the_redis_url_becomes_a_storage_the_limits_library_accepts(redis_url, uri, options):
    from limits.storage import storage_from_string

    from app.security.limits import limits_storage

    got_uri, got_options = limits_storage(redis_url)
    assert got_uri == uri
    assert options.items() <= got_options.items()
    storage = storage_from_string(got_uri, **got_options)  # builds its client; connects lazily
    if "sentinel" in uri:
        assert storage.service_name == "mymaster"
        assert storage.storage.connection_pool.connection_kwargs.get("db", 0) == options.get(
            "db", 0)


# --------------------------------------------------------------------------- Redis down

@pytest.fixture
def own_redis(config_overrides):
    """A Redis server of this test's own, which the test may stop."""
    from app.embedded_redis import server_args, wait

    folder = Path(tempfile.mkdtemp(prefix="ratelimit-redis-"))
    sock = folder / "redis.sock"
    proc = subprocess.Popen(server_args(str(sock), str(folder)), stdout=subprocess.DEVNULL)
    wait(f"unix://{sock}", timeout=EVENT_TIMEOUT)
    config_overrides["RATELIMIT_STORAGE_URI"] = f"redis+unix://{sock}"
    yield proc
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)


def test_with_its_redis_stopped_the_limiter_falls_back_and_pages_keep_working(
        own_redis, app, client, user):
    assert post_login(client).status_code == 302  # counted in that Redis
    from redis import Redis

    assert app.config["RATELIMIT_STORAGE_URI"].startswith("redis+unix://")
    storage = Redis.from_url(app.config["RATELIMIT_STORAGE_URI"].replace("redis+unix", "unix"))
    assert storage.ping() and not app.redis.keys("*")  # not the app's Redis
    assert any(b"login" in key for key in storage.keys("*")), "the limit is counted in Redis"
    storage.close()

    own_redis.terminate()
    own_redis.wait(timeout=60)
    assert client.get("/auth/login").status_code == 200
    assert post_login(browser(app), password="correct horse battery").status_code == 302
    # Counted in this process's memory meanwhile: looser (it starts again from zero), not off.
    statuses = [post_login(client).status_code for _ in range(4)]
    assert 500 not in statuses
    assert statuses == [302, 302, 302, 429], statuses


# --------------------------------------------------------------------------- several processes

def test_the_limit_is_shared_by_gunicorn_worker_processes(app, user, tmp_path):
    """Two gunicorn workers (as `make run` and the Procfile run them) count in the same Redis:
    failed logins sent to one process and then to the other run out one budget of 3."""
    port = free_port()
    access_log = tmp_path / "access.log"
    env = worker_env(RATELIMIT_ENABLED="1", RATELIMIT_LOGIN="3 per minute", WEB_CONCURRENCY=2,
                     GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_ACCESS_LOG=str(access_log))
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    web = subprocess.Popen(
        [gunicorn, "-c", "gunicorn.conf.py", "--keep-alive", "60",
         "--access-logformat", "%(p)s %(s)s %(m)s %(U)s", "microblog:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    first = second = None
    try:
        wait_for(lambda: _get(f"{base}/health"), message="gunicorn")
        # Two browsers on keep-alive connections, each served by a different worker process.
        first, first_pid, token1 = _browser_on_some_worker(base, access_log)
        second, second_pid, token2 = None, first_pid, None
        for _ in range(30):
            second, second_pid, token2 = _browser_on_some_worker(base, access_log)
            if second_pid != first_pid:
                break
            second.close()
        assert second_pid != first_pid, "every connection went to one worker"

        def fail(session, token):
            return session.post(f"{base}/auth/login", allow_redirects=False, timeout=30, data={
                "username": "susan", "password": "wrong", "csrf_token": token}).status_code

        statuses = [fail(first, token1), fail(second, token2), fail(first, token1),
                    fail(second, token2), fail(first, token1)]
        assert statuses == [302, 302, 302, 429, 429], statuses
        posts = wait_for(lambda: _logged_posts(access_log, 5), message="access log")
        assert [status for _, status in posts] == statuses
        # A keep-alive connection may be closed and reopened on the other process, so which
        # process served which request is read from the log, not assumed. Shared, not per
        # process: the process that said 429 first had itself seen fewer than 3 failures.
        pids = [pid for pid, _ in posts]
        assert len(set(pids[:4])) == 2, f"one process served every request: {pids}"
        assert pids[:3].count(pids[3]) < 3, pids
    finally:
        for session in (first, second):
            if session is not None:
                session.close()
        # A quick shutdown: a graceful one waits out any keep-alive connection still open
        # (--keep-alive 60 here) for up to graceful_timeout.
        os.killpg(web.pid, signal.SIGINT)
        web.wait(timeout=30)


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=30)  # the workers may still be loading the app
    except requests.RequestException:
        return None


def _browser_on_some_worker(base: str, access_log: Path) -> tuple[requests.Session, str, str]:
    """A new session (connection) that has loaded the login page; the pid that served it."""
    session = requests.Session()
    before = len(_log_lines(access_log))
    page = session.get(f"{base}/auth/login", timeout=30)
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    line = wait_for(lambda: _log_lines(access_log)[before:], message="access log")
    return session, line[-1].split()[0], match.group(1) or match.group(2)


def _log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _logged_posts(path: Path, count: int) -> list[tuple[str, int]] | None:
    posts = [line.split() for line in _log_lines(path) if " POST /auth/login" in line]
    return [(p[0], int(p[1])) for p in posts] if len(posts) >= count else None
