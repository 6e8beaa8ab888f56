"""API polls answered before the app (app/api/poll_cache.py): an unchanged export, import or
task polled with its ETag is a 304 from Redis alone, with the app's headers; everything that
would make the app answer otherwise (a change, a revoked or expired token, another user, the
rate limit, Redis gone) reaches the app, which answers as it always did."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from app import db
from app.exports import centre
from app.models import ApiToken, Export, Import, Task, TaskStatus, utcnow
from tests.api_helpers import bearer, token_for
from tests.conftest import browser, csrf_token, login, make_user, run_jobs_in_process, wait_for

PASSWORD = "correct horse battery"


class AppReached:
    """Counts the requests that reach Flask behind the poll cache."""

    def __init__(self, app) -> None:
        self.cache = app.wsgi_app
        self.flask = self.cache.wsgi_app
        self.count = 0
        self.cache.wsgi_app = self

    def __call__(self, environ, start_response):
        self.count += 1
        return self.flask(environ, start_response)


@pytest.fixture
def reached(app):
    return AppReached(app)


@pytest.fixture
def susan(app):
    return make_user("susan", password=PASSWORD, posts=["one", "two"])


@pytest.fixture
def headers(susan):
    return bearer(token_for(susan))


@pytest.fixture
def export_path(client, headers):
    return client.post("/api/exports", json={"format": "json"}, headers=headers).headers[
        "Location"]


def cached(client, reached, path, headers):
    """Poll until the cache answers (the app answers the first two: the first shows the
    ETag, the second is kept with the user's generation as it was before the app read it);
    the last answer, the cache's 304."""
    answer = client.get(path, headers=headers)
    tag = answer.headers["ETag"]
    for _ in range(3):
        before = reached.count
        answer = client.get(path, headers=headers | {"If-None-Match": tag})
        if reached.count == before:
            assert answer.status_code == 304
            return answer
    raise AssertionError(f"{path} was never answered from the cache")


def test_an_unchanged_poll_is_a_304_from_redis_with_the_apps_headers(app, client, reached,
                                                                     headers, export_path):
    first = client.get(export_path, headers=headers)
    tag = first.headers["ETag"]
    by_app = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert by_app.status_code == 304
    answered = reached.count
    by_cache = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert reached.count == answered  # Flask never saw it
    assert by_cache.status_code == 304 and by_cache.get_data() == b""
    assert dict(by_cache.headers) == dict(by_app.headers)
    assert by_cache.headers["ETag"] == first.headers["ETag"]
    assert "Authorization" in by_cache.headers["Vary"]
    assert by_cache.headers["X-Content-Type-Options"] == "nosniff"
    # Kept from a 200 (a poll without the ETag), the 304 is still the app's 304.
    assert client.get(export_path, headers=headers).status_code == 200
    from_a_200 = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert reached.count == answered + 1
    assert dict(from_a_200.headers) == dict(by_app.headers)


def test_polls_of_a_task_and_an_import_are_cached_too(app, client, reached, susan, headers,
                                                      export_path):
    task_path = client.get(export_path, headers=headers).get_json()["links"]["task"]
    cached(client, reached, task_path, headers)
    uploaded = client.post("/api/imports", data={"file": (
        io.BytesIO(b'{"posts": [{"body": "hi"}]}'), "posts.json")},
        headers=headers)
    cached(client, reached, uploaded.headers["Location"], headers)


def test_a_poll_without_etag_or_token_or_with_a_query_reaches_the_app(app, client, reached,
                                                                     headers, export_path):
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    for request_headers, query in (
            (headers, ""),  # no If-None-Match: the app's 200
            ({"If-None-Match": tag}, ""),  # no token: the app's 401
            (headers | {"If-None-Match": tag}, "?x=1"),
            # another language: an import's answer (and ETag) is in the reader's language
            (headers | {"If-None-Match": tag, "Accept-Language": "ko"}, ""),
            (headers | {"If-None-Match": tag}, "cookie")):
        before = reached.count
        sender = client
        if query == "cookie":  # a browser's session: the app decides what it does
            query, sender = "", browser(app)
            sender.set_cookie("session", "x", domain="localhost.localdomain")
        sender.get(export_path + query, headers=request_headers)
        assert reached.count == before + 1, (request_headers, query)


def test_progress_changes_the_answer_at_once(app, client, reached, susan, headers,
                                             export_path):
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    export = db.session.scalar(sa.select(Export))
    export.task.status, export.task.progress = TaskStatus.RUNNING, 40
    db.session.commit()
    moved = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert moved.status_code == 200 and moved.get_json()["progress"]["percent"] == 40
    assert moved.headers["ETag"] != tag


def test_an_event_to_the_user_sends_the_next_poll_to_the_app(app, client, reached, susan,
                                                             headers, export_path):
    from app import events

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    events.publish(app.redis, susan.id, events.event("unread_message_count", 1))
    before = reached.count
    assert client.get(export_path, headers=headers | {"If-None-Match": tag}).status_code == 304
    assert reached.count == before + 1


def test_finished_cancelled_retried_deleted_exports_are_the_apps_answer(app, client, reached,
                                                                        headers, export_path):
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    client.post(f"{export_path}/cancel", headers=headers)
    cancelled = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    assert client.post(f"{export_path}/retry", headers=headers).status_code == 202
    retried = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert retried.status_code == 200 and retried.get_json()["status"] == "queued"

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    run_jobs_in_process(app)  # the worker's path: start, progress, the file, finish
    finished = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert finished.status_code == 200 and finished.get_json()["status"] == "finished"

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    db.session.remove()
    assert centre.expire_due(utcnow() + timedelta(days=365)) == 1  # the scheduled expiry
    expired = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert expired.status_code == 200 and expired.get_json()["status"] == "expired"

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    assert client.delete(export_path, headers=headers).status_code == 204
    assert client.get(export_path, headers=headers | {"If-None-Match": tag}).status_code == 404


def test_a_purged_task_is_the_apps_404(app, client, reached, headers, export_path):
    from app.jobs import operations

    task_path = client.get(export_path, headers=headers).get_json()["links"]["task"]
    client.post(f"{export_path}/cancel", headers=headers)
    tag = cached(client, reached, task_path, headers).headers["ETag"]
    db.session.execute(sa.update(Task).values(finished_at=utcnow() - timedelta(days=30)))
    db.session.commit()  # a bulk statement of no known owner: everyone's polls go to the app
    tag = cached(client, reached, task_path, headers).headers["ETag"]
    assert operations.purge(timedelta(days=1), "test") == 1  # a bulk DELETE of tasks
    assert client.get(task_path, headers=headers | {"If-None-Match": tag}).status_code == 404


# Each way a token ends, in a browser of its own (the API's requests carry no cookie).

def revoke_on_the_settings_page(browser, susan, token_id, secret):
    login(browser, "susan", PASSWORD)
    browser.post(f"/settings/tokens/{token_id}/revoke",
                data={"csrf_token": csrf_token(browser, "/settings/tokens")})


def revoke_with_delete(browser, susan, token_id, secret):
    assert browser.delete("/api/tokens", headers=bearer(secret)).status_code == 204


def change_the_password(browser, susan, token_id, secret):
    login(browser, "susan", PASSWORD)
    browser.post("/auth/change_password", data={
        "current_password": PASSWORD, "password": "a new horse battery",
        "password2": "a new horse battery",
        "csrf_token": csrf_token(browser, "/auth/change_password")})


def reset_the_password(browser, susan, token_id, secret):
    reset = f"/auth/reset_password/{susan.get_reset_password_token()}"
    browser.post(reset, data={"password": "a new horse battery",
                              "password2": "a new horse battery",
                              "csrf_token": csrf_token(browser, reset)})


@pytest.mark.parametrize("revoke", [revoke_on_the_settings_page, revoke_with_delete,
                                    change_the_password, reset_the_password])
def test_a_revoked_token_is_a_401_at_once(app, client, reached, susan, export_path, revoke):
    secret = token_for(susan)
    headers = bearer(secret)
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    token_id = db.session.scalar(sa.select(ApiToken.id).where(
        ApiToken.digest == ApiToken.digest_of(secret)))
    revoke(browser(app), susan, token_id, secret)
    db.session.remove()
    assert db.session.get(ApiToken, token_id) is None
    refused = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert refused.status_code == 401


def test_an_expiring_token_is_never_answered_past_its_expiry(app, client, reached, susan,
                                                             export_path):
    headers = bearer(token_for(susan, expires_in=timedelta(seconds=4)))
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    [entry] = app.redis.keys("microblog:poll:*")
    assert 0 < app.redis.ttl(entry) <= 4  # not the usual minute
    wait_for(lambda: client.get(export_path, headers=headers | {"If-None-Match": tag})
             .status_code == 401, message="the expired token refused")


def test_another_users_token_on_the_same_path_is_a_404(client, reached, headers, export_path):
    cached(client, reached, export_path, headers)
    tag = client.get(export_path, headers=headers).headers["ETag"]
    other = bearer(token_for(make_user("bob")))
    assert client.get(export_path, headers=other | {"If-None-Match": tag}).status_code == 404


def test_an_import_waiting_for_confirmation_is_kept_no_longer_than_its_confirm_by(
        app, client, reached, susan, headers):
    imp_id = "i" * 20
    task = Task(id="t" * 36, name="preview_import", user_id=susan.id, complete=True,
                status=TaskStatus.FINISHED, progress=100, created_at=utcnow())
    db.session.add_all([task, Import(id=imp_id, user_id=susan.id, task_id=task.id,
                                     preview_json="{}",
                                     confirm_by=utcnow() + timedelta(seconds=3))])
    db.session.commit()
    path = f"/api/imports/{imp_id}"
    tag = cached(client, reached, path, headers).headers["ETag"]
    [entry] = app.redis.keys("microblog:poll:*")
    assert 0 < app.redis.ttl(entry) <= 3
    wait_for(lambda: client.get(path, headers=headers | {"If-None-Match": tag})
             .status_code == 200, message="the expired preview shown")
    assert client.get(path, headers=headers).get_json()["status"] == "expired"


@pytest.mark.parametrize("config_overrides", [
    {"RATELIMIT_ENABLED": True, "RATELIMIT_API": "6 per minute"},
    {"RATELIMIT_ENABLED": True, "RATELIMIT_API": "100 per hour;6 per minute"}])
def test_the_rate_limit_counts_both_paths_and_the_app_answers_the_429(app, client, reached,
                                                                      headers, export_path):
    # RATELIMIT_API counts per user and route. The first GET shows the ETag (1 left: 5); the
    # app answers the first poll, the cache the next ones: one count throughout.
    tag = client.get(export_path, headers=headers).headers["ETag"]
    left, by_app = [], []
    for _ in range(5):
        before = reached.count
        answer = client.get(export_path, headers=headers | {"If-None-Match": tag})
        assert answer.status_code == 304
        assert answer.headers["RateLimit-Policy"] == '"default";q=6;w=60'
        left.append(answer.headers["RateLimit"].split(";")[1])
        by_app.append(reached.count > before)
    assert left == ["r=4", "r=3", "r=2", "r=1", "r=0"]
    assert by_app == [True, False, False, False, False]
    before = reached.count
    refused = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert refused.status_code == 429 and reached.count == before + 1
    assert int(refused.headers["Retry-After"]) > 0


def test_with_redis_gone_the_app_answers(app, client, reached, headers, export_path):
    from app.api.poll_cache import LOOKUP

    tag = cached(client, reached, export_path, headers).headers["ETag"]
    gone = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=1)
    reached.cache.lookup = gone.register_script(LOOKUP)
    before = reached.count
    answer = client.get(export_path, headers=headers | {"If-None-Match": tag})
    assert answer.status_code == 304 and reached.count == before + 1


@pytest.mark.parametrize("config_overrides", [{"TRUSTED_HOSTS": ["localhost.localdomain"]}])
def test_a_poll_to_a_host_the_site_does_not_answer_is_the_apps_400(client, reached, headers,
                                                                    export_path):
    tag = cached(client, reached, export_path, headers).headers["ETag"]
    before = reached.count
    refused = client.get(export_path, headers=headers | {"If-None-Match": tag},
                         base_url="http://evil.example")
    assert refused.status_code == 400 and reached.count == before + 1
