"""The token API's own rules, as a program meets them: tokens (the tutorial's POST and
DELETE /api/tokens, bearer tokens and their scopes), errors as problem+json in the reader's
language, Idempotency-Key, ETag polls, cursor pages with Link, rate-limit headers and 429s,
and the OpenAPI 3.1 document with its documentation page. The exports resource is in
test_api_exports.py; who may reach what in test_api_authz.py."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.models import ApiToken, Export, Post, utcnow
from tests.api_helpers import bearer, token_for
from tests.conftest import make_user, run_jobs_in_process

PASSWORD = "correct horse battery"


@pytest.fixture
def susan(app):
    return make_user("susan", posts=[f"post {n}" for n in range(7)])


@pytest.fixture
def headers(susan):
    return bearer(token_for(susan))


# --------------------------------------------------------------------------- tokens

def test_a_password_gets_a_token_that_opens_the_api_for_an_hour(client, susan):
    response = client.post("/api/tokens", auth=("susan", PASSWORD))
    assert response.status_code == 200
    body = response.get_json()
    assert body["token"].startswith("mbt_") and body["scope"] == "read write"
    me = client.get("/api/users/me", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.get_json()["username"] == "susan"
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.user_id == susan.id))
    assert 3500 < (token.expires_at - token.created_at).total_seconds() <= 3600
    assert token.digest != body["token"]  # kept as a hash only


@pytest.mark.parametrize("auth", [("susan", "wrong"), ("nobody", PASSWORD), None])
def test_a_wrong_password_gets_no_token(client, susan, auth):
    response = client.post("/api/tokens", auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.mimetype == "application/problem+json"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


def test_a_password_gets_no_token_past_the_accounts_cap_shared_with_the_settings_page(
        client, susan):
    # Live tokens from both places count; an expired one does not.
    expired, _ = ApiToken.issue(susan, "old", "read", timedelta(days=1))
    expired.expires_at = utcnow() - timedelta(minutes=1)
    for n in range(ApiToken.MAX_LIVE_PER_USER - 1):
        ApiToken.issue(susan, f"script {n}", "read", None)
    db.session.commit()
    spanish = {"Accept-Language": "es"}
    assert client.post("/api/tokens", auth=("susan", PASSWORD),
                       headers=spanish).status_code == 200
    before = db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken))
    refused = client.post("/api/tokens", auth=("susan", PASSWORD), headers=spanish)
    assert refused.status_code == 409 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"] == "/api/problems/too-many-tokens"
    assert "50" in problem["detail"] and "Revoca" in problem["detail"], problem
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == before


def test_the_schedule_deletes_tokens_thirty_days_after_they_expired(app, susan):
    from rq.cron import CronScheduler

    now = utcnow()
    ages = {"live": None, "expired yesterday": timedelta(days=1),
            "expired 29 days ago": timedelta(days=29), "expired 31 days ago": timedelta(days=31)}
    for name, age in ages.items():
        token, _ = ApiToken.issue(susan, name, "read", timedelta(days=1))
        token.expires_at = now - age if age else None
    db.session.commit()
    scheduler = CronScheduler(connection=app.redis)
    scheduler.load_config_from_file("app.jobs.cron")
    [purge] = [job for job in scheduler.get_jobs() if job.func.__name__ == "purge_expired_tokens"]
    assert purge.interval == 24 * 3600 and purge.queue_name == "microblog-tasks"
    app.task_queue.enqueue(purge.func)
    run_jobs_in_process(app)
    db.session.expire_all()
    left = set(db.session.scalars(sa.select(ApiToken.name).where(ApiToken.user_id == susan.id)))
    assert left == {"live", "expired yesterday", "expired 29 days ago"}


@pytest.mark.parametrize("config_overrides", [{"RATELIMIT_ENABLED": True,
                                               "RATELIMIT_LOGIN": "3 per minute"}])
def test_password_guesses_are_limited_like_the_login_forms(client, susan):
    for _ in range(3):
        assert client.post("/api/tokens", auth=("susan", "wrong")).status_code == 401
    refused = client.post("/api/tokens", auth=("susan", PASSWORD))
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.get_json()["type"] == "/api/problems/too-many-requests"


def test_delete_revokes_the_token_it_is_sent_with_and_only_it(client, susan):
    first, second = token_for(susan, scope="read"), token_for(susan)
    assert client.delete("/api/tokens", headers=bearer(first)).status_code == 204
    assert client.get("/api/users/me", headers=bearer(first)).status_code == 401
    assert client.get("/api/users/me", headers=bearer(second)).status_code == 200


def test_a_new_password_revokes_every_token(client, susan):
    secret = token_for(susan)
    susan.set_password("a brand new password")
    db.session.commit()
    response = client.get("/api/users/me", headers=bearer(secret))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_read_token_reads_and_may_not_write(client, susan):
    reader = bearer(token_for(susan, scope="read"))
    assert client.get("/api/posts?list=mine", headers=reader).status_code == 200
    refused = client.post("/api/posts", json={"body": "hello"}, headers=reader)
    assert refused.status_code == 403
    assert refused.get_json()["type"] == "/api/problems/insufficient-scope"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Post)) == 7


def test_tokens_never_reach_the_logs(app, client, susan, caplog):
    secret = token_for(susan)
    with caplog.at_level(logging.DEBUG):
        app.logger.error("a client sent %s in a URL", f"/api/users/me?token={secret}")
        client.get(f"/api/nowhere?token={secret}", headers=bearer(secret))
        client.post("/api/tokens", auth=("susan", PASSWORD))
    assert secret not in caplog.text
    assert "mbt_<token>" in caplog.text


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("language,words", [("es", "Aquí no hay nada"),
                                            ("ko", "여기에는 아무것도"),
                                            ("en", "There is nothing here")])
def test_errors_are_problem_json_in_the_readers_language(client, headers, language, words):
    response = client.get("/api/exports/no-such-export",
                          headers=headers | {"Accept-Language": language})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "/api/problems/not-found" and problem["status"] == 404
    assert words in problem["detail"]


def test_a_method_a_route_does_not_take_is_a_405_naming_the_ones_it_does(client, headers):
    response = client.put("/api/users/me", headers=headers)
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["type"] == "/api/problems/method-not-allowed"


@pytest.mark.parametrize("body", [{"body": ""}, {"body": "x" * 281}, {"body": 3}, [1],
                                  {"nothing": "here"}, {"body": "nul \x00"}])
def test_bad_input_is_a_clear_4xx_and_saves_nothing(client, headers, body):
    response = client.post("/api/posts", json=body, headers=headers)
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Post)) == 7


def test_a_post_is_written_in_the_language_of_the_request(client, headers):
    response = client.post("/api/posts", json={"body": "  hola  "},
                           headers=headers | {"Accept-Language": "es"})
    assert response.status_code == 201
    assert response.get_json()["body"] == "hola" and response.get_json()["language"] == "es"


# --------------------------------------------------------------------------- conventions

def test_the_same_idempotency_key_gives_the_first_answer_and_one_post(client, headers):
    key = {"Idempotency-Key": "3f1c6a2e"}
    first = client.post("/api/posts", json={"body": "once"}, headers=headers | key)
    again = client.post("/api/posts", json={"body": "once"}, headers=headers | key)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert db.session.scalar(sa.select(sa.func.count()).where(Post.body == "once")) == 1
    other = client.post("/api/posts", json={"body": "twice"}, headers=headers | key)
    assert other.status_code == 422
    assert other.get_json()["type"] == "/api/problems/idempotency-key-reused"
    assert db.session.scalar(sa.select(sa.func.count()).where(Post.body == "twice")) == 0


def test_idempotency_keys_are_each_users_own(client, susan, headers):
    make_user("bob")
    bob = bearer(token_for(db.session.scalar(sa.select(type(susan)).where(
        type(susan).username == "bob"))))
    key = {"Idempotency-Key": "same-key"}
    client.post("/api/posts", json={"body": "susan's"}, headers=headers | key)
    response = client.post("/api/posts", json={"body": "bob's"}, headers=bob | key)
    assert response.status_code == 201 and response.get_json()["body"] == "bob's"


def test_an_invalid_request_does_not_use_up_its_key(client, headers):
    key = {"Idempotency-Key": "retry-me"}
    assert client.post("/api/posts", json={}, headers=headers | key).status_code == 422
    assert client.post("/api/posts", json={"body": "now"},
                       headers=headers | key).status_code == 201


def test_following_the_link_headers_lists_every_post_once_newest_first(client, headers):
    url, seen = "/api/posts?list=mine&limit=3", []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        seen += [p["body"] for p in response.get_json()]
        url = response.links.get("next", {}).get("url") if hasattr(response, "links") \
            else _next(response)
    assert seen == [f"post {n}" for n in reversed(range(7))]


def _next(response) -> str | None:
    import requests.utils

    links = requests.utils.parse_header_links(response.headers.get("Link", ""))
    return next((link["url"] for link in links if link.get("rel") == "next"), None)


def test_a_made_up_cursor_is_a_404(client, headers):
    response = client.get("/api/posts?cursor=not-ours", headers=headers)
    assert response.status_code == 404
    assert response.get_json()["type"] == "/api/problems/invalid-cursor"


def test_an_unchanged_task_answers_304_and_a_changed_one_200(client, susan, headers):
    from app.models import Task, TaskStatus
    from tests.endpoints import build_world  # noqa: F401  (the world is alice's; here susan's)

    task = Task(id="task-of-susan", name="export_posts", description="Exporting posts...",
                user=susan, status=TaskStatus.FAILED, complete=True, progress=40,
                error="Cancelled by you.")
    db.session.add(task)
    db.session.commit()
    first = client.get("/api/tasks/task-of-susan", headers=headers | {"Accept-Language": "es"})
    assert first.status_code == 200 and first.get_json()["error"] == "Cancelada por ti."
    etag = first.headers["ETag"]
    again = client.get("/api/tasks/task-of-susan", headers=headers | {"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == etag
    task.progress = 41
    db.session.commit()
    changed = client.get("/api/tasks/task-of-susan", headers=headers | {"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


@pytest.mark.parametrize("config_overrides", [{"RATELIMIT_ENABLED": True,
                                               "RATELIMIT_API": "3 per minute"}])
def test_every_answer_says_the_rate_limit_and_a_429_when_to_come_back(client, headers):
    answers = [client.get("/api/users/me", headers=headers) for _ in range(3)]
    assert [a.headers["RateLimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0"]
    assert all(a.headers["RateLimit-Policy"] == '"default";q=3;w=60' for a in answers)
    refused = client.get("/api/users/me", headers=headers)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["retry_after"] == int(refused.headers["Retry-After"])


# --------------------------------------------------------------------------- the document

def test_the_openapi_document_is_3_1_and_describes_every_api_route(app, client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0" and document["info"]["version"]
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented
    error = document["components"]["responses"]["DEFAULT_ERROR"]["content"]
    assert list(error) == ["application/problem+json"]


def test_the_documentation_page_loads_only_our_own_files(client):
    page = client.get("/api/docs").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f"/api/docs/assets/{asset}" in page
        assert client.get(f"/api/docs/assets/{asset}").status_code == 200
    assert client.get("/api/docs/assets/swagger-ui.js.map").status_code == 404


def test_exports_of_other_kinds_are_not_listed(client, susan, headers):
    assert client.get("/api/exports", headers=headers).get_json() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Export)) == 0
