"""Counts and sizes on pages are written the reader's way: "300,003" in English and Korean,
"300.003" in Spanish (the language comes from Accept-Language), never "300003"."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import db
from app.jobs import operations, stats
from app.models import Export, Task, TaskStatus, User, utcnow
from tests.conftest import csrf_token, login, make_user
from tests.test_i18n import compiled_catalogs, page, translated_app  # noqa: F401 (fixtures)

pytestmark = pytest.mark.once

COUNT = 300003
GROUPED = {"en": "300,003", "es": "300.003", "ko": "300,003"}
KIB = {"en": "1.5 KiB", "es": "1,5 KiB", "ko": "1.5 KiB"}  # 1536 bytes
LANGUAGES = pytest.mark.parametrize("language", sorted(GROUPED))


def _ungrouped(html: str) -> bool:
    return str(COUNT) in html


@LANGUAGES
def test_the_export_centre_groups_post_counts_and_writes_sizes_the_locales_way(
        client, app, language):
    susan = make_user()
    db.session.add(Export(user_id=susan.id, format="json", filename="posts.json",
                          storage_key="k", posts_count=COUNT, size=1536, finished_at=utcnow(),
                          expires_at=utcnow() + timedelta(days=7)))
    db.session.commit()
    login(client)
    html = page(client, "/exports", language)
    assert GROUPED[language] in html and not _ungrouped(html)
    assert KIB[language] in html


@LANGUAGES
def test_profiles_group_follower_counts(client, app, language, monkeypatch):
    make_user()
    make_user("bob")
    monkeypatch.setattr(User, "followers_count", lambda self: COUNT)
    monkeypatch.setattr(User, "following_count", lambda self: COUNT)
    login(client)
    expected = {"en": "300,003 followers, 300,003 following",
                "es": "300.003 seguidores, 300.003 seguidos",
                "ko": "팔로워 300,003명, 팔로잉 300,003명"}[language]
    for url in ("/user/bob", "/user/bob/popup"):
        html = page(client, url, language)
        assert expected in html and not _ungrouped(html), url


@LANGUAGES
def test_the_unread_messages_badge_is_grouped(client, app, language, monkeypatch):
    make_user()
    monkeypatch.setattr(User, "unread_message_count", lambda self: COUNT)
    login(client)
    html = page(client, "/explore", language)
    assert f">{GROUPED[language]}</span>" in html and not _ungrouped(html)


def _summary() -> stats.Summary:
    queue = stats.QueueFigures(name="microblog-tasks", depth=COUNT, latency_seconds=None,
                                   scheduled=COUNT, started=COUNT, failed=COUNT,
                                   abandoned=COUNT)
    kind = stats.TypeFigures("export_posts", queued=COUNT, running=COUNT, finished=COUNT,
                                 failed=COUNT, cancelled=COUNT)
    return stats.Summary(since=utcnow(), queued=COUNT, running=COUNT, retrying=COUNT,
                             finished=COUNT, failed=COUNT, cancelled=COUNT, queues=[queue],
                             types=[kind])


def _worker() -> stats.WorkerFigures:
    return stats.WorkerFigures(
        name="w1", hostname="host", pid=4242, state="idle", queues=["microblog-tasks"],
        current_job_id=None, job_since=None, last_heartbeat=None, born=None,
        successful_jobs=COUNT, failed_jobs=COUNT, rss_bytes=1536)


@pytest.fixture
def admin_client(client):
    boss = make_user("boss")
    boss.admin = True
    db.session.add(Task(id="t-boss", name="export_posts", user_id=boss.id, attempts=COUNT,
                        status=TaskStatus.FAILED, complete=True,
                        finished_at=utcnow() - timedelta(days=40)))
    db.session.commit()
    login(client, "boss")
    return client


@LANGUAGES
def test_the_admin_jobs_page_groups_every_figure(admin_client, app, language, monkeypatch):
    monkeypatch.setattr(stats, "summary", _summary)
    monkeypatch.setattr(stats, "workers", lambda: [_worker()])
    html = page(admin_client, "/admin/jobs", language)
    assert not _ungrouped(html)
    # the summary bar's 7 counts, the type row's 5, the queue row's 5, the worker's 2, and the
    # task's attempts
    assert html.count(GROUPED[language]) >= 20
    assert KIB[language] in html
    html = page(admin_client, "/admin/jobs/t-boss", language)
    assert GROUPED[language] in html and not _ungrouped(html)


@LANGUAGES
def test_the_purge_pages_group_the_number_of_tasks(admin_client, app, language, monkeypatch):
    monkeypatch.setattr(operations, "purge_count", lambda older_than: COUNT)
    monkeypatch.setattr(operations, "purge", lambda older_than, actor: COUNT)
    html = page(admin_client, "/admin/purge?days=30", language)
    assert GROUPED[language] in html and not _ungrouped(html)
    admin_client.post("/admin/purge", data={"days": "30", "csrf_token": csrf_token(
        admin_client, "/admin/jobs")}, headers={"Accept-Language": language})
    html = page(admin_client, "/admin/jobs", language)
    assert GROUPED[language] in html and not _ungrouped(html)
