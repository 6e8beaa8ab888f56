"""The import engine (app/imports/centre.py, importer.py, the tasks): an archive uploaded,
previewed with nothing written, confirmed, imported with each post's origin, once; follows;
expiry; the mail; the CLI. Real Redis and RQ (jobs run in this process, or by a real
`rq worker`), real SMTP (aiosmtpd); the archives built by tests/archives.py."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app import db
from app import tasks as worker_tasks
from app.exports.formats import write_export
from app.exports.storage import get_storage
from app.imports import centre, importer
from app.jobs import lifecycle, types
from app.models import Import, Post, PostOrigin, Task, TaskStatus, User
from tests.archives import (
    mastodon_archive,
    pdf_file,
    posts_json,
    stamp,
    x_archive,
)
from tests.conftest import make_user, run_jobs_in_process, run_worker_burst

pytest_plugins = ("tests.s3",)  # the moto_server and s3 fixtures


def upload(user: User, path: str) -> Import:
    """What POST /imports does: the archive stored, the preview task launched with it."""
    with open(path, "rb") as stream:
        imp = centre.store_upload(user, os.path.basename(path), stream)
    lifecycle.launch(user, centre.TASK_PREVIEW, "Reading your archive...", imp.id,
                     attach=centre.attach(imp), job_timeout=types.import_timeout(imp.size))
    return imp


def confirm(imp: Import) -> Task:
    """What POST /imports/<id>/confirm does."""
    centre.prepare_confirm(imp)
    return lifecycle.launch(imp.user, centre.TASK_IMPORT, "Importing posts...", imp.id,
                            attach=centre.attach(imp),
                            job_timeout=types.import_timeout(imp.size))


def fresh(imp: Import) -> Import:
    db.session.expire_all()
    return db.session.get(Import, imp.id)


def previewed(app, user: User, path: str) -> Import:
    imp = upload(user, path)
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == Import.READY, (imp.task.status, imp.task.error)
    return imp


def imported(app, user: User, path: str) -> Import:
    imp = previewed(app, user, path)
    confirm(imp)
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == Import.FINISHED, (imp.task.status, imp.task.error)
    return imp


def posts_of(user: User) -> list[Post]:
    return list(db.session.scalars(
        sa.select(Post).where(Post.user_id == user.id).order_by(Post.timestamp, Post.id)))


def stored_files(app) -> list[Path]:
    return [p for p in Path(app.config["EXPORT_FOLDER"]).rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- the preview

def test_the_preview_counts_what_is_in_the_archive_and_writes_nothing(app, tmp_path):
    susan = make_user("susan")
    path = mastodon_archive(
        tmp_path / "archive.zip", account="someone",
        posts=["first toot", "second toot", {"text": "third", "language": "de"},
               "x" * 2000, "fifth", "sixth"],
        boosts=2, replies_to_others=1, direct=1, following=["@bob@elsewhere.example"])
    imp = previewed(app, susan, path)
    preview = imp.preview()
    assert preview["kind"] == "mastodon" and imp.kind == "mastodon"
    assert preview["posts"] == 6 and preview["already"] == 0
    assert preview["first"] == stamp(0).isoformat() + "Z"
    assert preview["last"] == stamp(5).isoformat() + "Z"
    assert preview["skipped"] == {"boost": 2, "reply": 1, "direct": 1}
    assert preview["broken"] == 0 and preview["follows"] == 1
    assert [s["body"] for s in preview["samples"]][:3] == ["first toot", "second toot", "third"]
    assert len(preview["samples"]) == 5
    assert preview["samples"][3]["body"] == "x" * 500 + "…"  # a long one recognisable, cut
    assert preview["warnings"] == ["This is an archive of @someone, not of you (@susan)."]
    assert centre.preview_warnings(imp) == preview["warnings"]
    # Nothing written to the account until the user presses Import.
    assert posts_of(susan) == []
    assert imp.confirm_by is not None and imp.storage_key is not None
    assert "8 posts found" not in (imp.task.result_message or "")
    assert imp.task.result_message.startswith("Your archive was read: 6 posts found.")


def test_the_preview_counts_the_posts_already_on_the_account(app, tmp_path):
    susan = make_user("susan")
    # One written here (to the microsecond) that an export of it would carry to the second,
    db.session.add(Post(body="written here", timestamp=datetime(2024, 3, 1, 9, 30, 0, 123456),
                        author=susan))
    db.session.commit()
    # and two brought in by an earlier import of an overlapping archive.
    imported(app, susan, posts_json(tmp_path / "old.json", user="susan", posts=[
        {"body": "old one", "timestamp": stamp(1)}, {"body": "old two", "timestamp": stamp(2)}]))
    path = posts_json(tmp_path / "posts.json", user="susan", posts=[
        {"body": "written here", "timestamp": stamp(0)},
        {"body": "old one", "timestamp": stamp(1)}, {"body": "old two", "timestamp": stamp(2)},
        {"body": "new", "timestamp": stamp(3)}])
    preview = previewed(app, susan, path).preview()
    assert preview["posts"] == 4 and preview["already"] == 3
    assert preview["warnings"] == []  # the archive is susan's own


def test_a_refused_archive_fails_the_preview_with_its_reason(app, tmp_path):
    susan = make_user("susan")
    imp = upload(susan, pdf_file(tmp_path / "archive.zip"))
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == TaskStatus.FAILED
    assert imp.task.error.startswith("This file looks like a PDF document, not an archive. "
                                     "Upload a Microblog export")
    assert imp.task.attempts == 1  # never retried: it would only be refused again
    assert centre.refusal(imp) == imp.task.error
    assert imp.storage_key is None and stored_files(app) == []


def test_an_empty_upload_is_refused_and_nothing_stored(app, tmp_path):
    susan = make_user("susan")
    empty = tmp_path / "posts.json"
    empty.write_bytes(b"")
    with open(empty, "rb") as stream, pytest.raises(centre.ImportRefused, match="empty"):
        centre.store_upload(susan, "posts.json", stream)
    assert stored_files(app) == []



@pytest.mark.parametrize("config_overrides", [{"IMPORT_MAX_BYTES": 64 * 1024}])
def test_an_upload_past_the_limit_is_refused_as_it_streams_in(app, tmp_path, config_overrides):
    """A body without a length (chunked) is counted while it is stored: refused past the
    limit, in the words of the 413 page, and nothing is left in storage."""
    susan = make_user("susan")
    big = posts_json(tmp_path / "posts.json", user="susan", posts=["x" * 1000] * 100)
    with open(big, "rb") as stream, pytest.raises(centre.ImportRefused) as refused:
        centre.store_upload(susan, "posts.json", stream)
    assert str(refused.value) == "The file is larger than 64.0 KiB, the most an import accepts."
    assert stored_files(app) == []


# --------------------------------------------------------------------------- the import

def test_the_import_writes_the_posts_with_their_origin_time_language_and_author(app,
                                                                                tmp_path):
    susan = make_user("susan")
    long_toot = "a long toot " * 100  # past the compose form's 280: kept whole
    path = mastodon_archive(tmp_path / "archive.zip", account="susan", posts=[
        {"text": "hola", "language": "es"}, {"text": long_toot.strip(), "language": None},
        "line one\nline two"])
    imp = imported(app, susan, path)
    posts = posts_of(susan)
    assert [p.body for p in posts] == ["hola", long_toot.strip(), "line one\nline two"]
    assert [p.timestamp for p in posts] == [stamp(0), stamp(1), stamp(2)]
    assert [p.language for p in posts] == ["es", None, "en"]
    assert {p.origin for p in posts} == {PostOrigin.MASTODON}
    assert all(p.origin_id.startswith("https://mastodon.example/") for p in posts)
    assert len({p.origin_key for p in posts}) == 3
    assert {p.author.username for p in posts} == {"susan"}
    assert (imp.imported, imp.failed, imp.position) == (3, 0, 3)
    assert imp.task.result_message == "Your import is done: 3 posts imported."


def test_an_x_archive_is_imported_with_its_ids(app, tmp_path):
    susan = make_user("susan")
    path = x_archive(tmp_path / "x.zip", account="susan", tweets=["one &amp; two", "three"],
                     retweets=1)
    imp = imported(app, susan, path)
    posts = posts_of(susan)
    assert [p.origin for p in posts] == [PostOrigin.X, PostOrigin.X]
    assert all(p.origin_id for p in posts)
    assert imp.skipped() == {"boost": 1}


def test_importing_the_same_archive_twice_or_an_overlapping_one_adds_no_duplicate(
        app, tmp_path):
    susan = make_user("susan")
    first = posts_json(tmp_path / "a.json", user="susan", posts=["one", "two", "three"])
    imported(app, susan, first)
    again = imported(app, susan, first)
    assert (again.imported, again.skipped()) == (0, {"duplicate": 3})
    overlapping = posts_json(tmp_path / "b.json", user="susan", posts=[
        {"body": "three", "timestamp": stamp(2)}, {"body": "four", "timestamp": stamp(3)}])
    later = imported(app, susan, overlapping)
    assert (later.imported, later.skipped()) == (1, {"duplicate": 1})
    assert [p.body for p in posts_of(susan)] == ["one", "two", "three", "four"]
    # A Mastodon archive's toots are the same toots however often it comes.
    toots = mastodon_archive(tmp_path / "m.zip", account="susan", posts=["toot"])
    imported(app, susan, toots)
    assert imported(app, susan, toots).skipped() == {"duplicate": 1}
    assert len(posts_of(susan)) == 5


@pytest.mark.parametrize("fmt", ["json", "csv", "activitystreams"])
def test_restoring_a_backup_brings_back_only_the_posts_the_account_lost(app, tmp_path, fmt):
    susan = make_user("susan")
    written = [Post(body=f"post {i}", timestamp=datetime(2024, 5, 1, 12, 0, i, 1000 * i),
                    author=susan) for i in range(1, 6)]
    db.session.add_all(written)
    db.session.commit()
    backup = tmp_path / f"backup.{fmt}"
    with open(backup, "wb") as out:
        write_export(fmt, susan, out)
    for lost in written[1:3]:
        db.session.delete(lost)
    db.session.commit()

    restored = imported(app, susan, str(backup))
    assert (restored.imported, restored.skipped()) == (2, {"duplicate": 3})
    assert [p.body for p in posts_of(susan)] == [f"post {i}" for i in range(1, 6)]
    # and the same backup again adds nothing, now that every post is back
    assert imported(app, susan, str(backup)).skipped() == {"duplicate": 5}
    assert len(posts_of(susan)) == 5


def test_the_database_refuses_a_second_post_with_the_same_origin_key(app):
    susan = make_user("susan")
    db.session.add(Post(body="a", author=susan, origin="x", origin_key="k" * 64))
    db.session.commit()
    db.session.add(Post(body="b", author=susan, origin="x", origin_key="k" * 64))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    # Another account may have the same post; and posts written here (no key) never collide.
    other = make_user("other")
    db.session.add_all([Post(body="a", author=other, origin="x", origin_key="k" * 64),
                        Post(body="c", author=susan), Post(body="c", author=susan)])
    db.session.commit()


def test_a_broken_item_fails_alone_and_is_listed_as_a_problem(app, tmp_path):
    susan = make_user("susan")
    broken = {"id": "https://mastodon.example/users/susan/statuses/9/activity",
              "type": "Create", "actor": "https://mastodon.example/users/susan",
              "object": {"id": "https://mastodon.example/users/susan/statuses/9",
                         "type": "Note", "content": "<p>no date</p>",
                         "to": ["https://www.w3.org/ns/activitystreams#Public"]}}
    path = mastodon_archive(tmp_path / "archive.zip", account="susan", posts=["before"],
                            extra_items=[broken])
    imp = previewed(app, susan, path)
    assert imp.preview()["broken"] == 1
    confirm(imp)
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == Import.FINISHED
    assert (imp.imported, imp.failed) == (1, 1)
    [problem] = centre.problems_of(imp)
    assert (problem.outcome, problem.item) == ("failed", 2)
    assert problem.reason == "no `published`"
    assert problem.original_id and problem.original_id.endswith("/statuses/9")


def test_a_post_the_database_cannot_store_fails_alone(app, tmp_path, monkeypatch):
    """A value the database refuses (one item of a batch) fails that item, as a problem; the
    batch's other posts are imported."""
    susan = make_user("susan")
    path = posts_json(tmp_path / "posts.json", user="susan", posts=["ok 1", "bad", "ok 2"])
    imp = previewed(app, susan, path)
    real = importer.post_row

    def unstorable(user_id, origin, post, key):
        row = real(user_id, origin, post, key)
        if post.body == "bad":
            row["user_id"] = None  # NOT NULL: refused by every database
        return row

    monkeypatch.setattr(importer, "post_row", unstorable)
    confirm(imp)
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == Import.FINISHED
    assert [p.body for p in posts_of(susan)] == ["ok 1", "ok 2"]
    assert (imp.imported, imp.failed, imp.position) == (2, 1, 3)
    [problem] = centre.problems_of(imp)
    assert problem.item == 2 and problem.reason.startswith("the database could not store it")


def test_follows_existing_users_and_lists_the_others_as_not_found(app, tmp_path):
    susan = make_user("susan")
    bob, carol = make_user("bob"), make_user("Carol")
    path = mastodon_archive(tmp_path / "archive.zip", account="susan", posts=["hi"], following=[
        "bob@mastodon.example", "@carol@elsewhere.example", "nobody@elsewhere.example",
        "susan@mastodon.example"])
    imp = imported(app, susan, path)
    assert susan.is_following(bob) and susan.is_following(carol)
    assert not susan.is_following(susan)
    assert imp.followed == 2
    [missing] = [p for p in centre.problems_of(imp) if p.outcome == "not_found"]
    # Its line in following_accounts.csv (under the header).
    assert missing.original_id == "nobody@elsewhere.example" and missing.item == 4
    assert importer.summary(imp)["not_found"] == 1
    # Imported again: the same follows, nothing twice.
    again = imported(app, susan, mastodon_archive(
        tmp_path / "again.zip", account="susan", following=["bob@mastodon.example"]))
    assert again.followed == 1 and susan.following_count() == 2


def test_one_import_at_a_time_per_user(app, tmp_path):
    susan = make_user("susan")
    first = previewed(app, susan, posts_json(tmp_path / "a.json", user="susan", posts=["a"]))
    second = previewed(app, susan, posts_json(tmp_path / "b.json", user="susan", posts=["b"]))
    confirm(first)  # queued, not yet run
    with pytest.raises(lifecycle.TaskAlreadyRunning):
        confirm(fresh(second))
    assert fresh(second).status == Import.READY  # refused: unchanged, still waiting
    run_jobs_in_process(app)
    confirm(fresh(second))
    run_jobs_in_process(app)
    assert [p.body for p in posts_of(susan)] == ["a", "b"]


# --------------------------------------------------------------------------- files

def test_a_finished_imports_archive_is_deleted_at_once(app, tmp_path):
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan",
                                           posts=["a"]))
    key = imp.storage_key
    assert get_storage().exists(key)
    confirm(imp)
    run_jobs_in_process(app)
    imp = fresh(imp)
    assert imp.status == Import.FINISHED and imp.storage_key is None
    assert not get_storage().exists(key) and stored_files(app) == []


def test_an_archive_in_s3_is_read_from_a_local_copy_and_deleted_once_imported(s3, app,
                                                                            tmp_path):
    susan = make_user("susan")
    imp = previewed(app, susan, mastodon_archive(tmp_path / "archive.zip", account="susan",
                                                 posts=["a", "b"]))
    assert s3.keys() == [f"exports/imports/{susan.id}/{imp.id}/archive"]
    confirm(imp)
    run_jobs_in_process(app)
    assert fresh(imp).status == Import.FINISHED
    assert [p.body for p in posts_of(susan)] == ["a", "b"]
    assert s3.keys() == []
    assert [p for p in s3.temp_dir.rglob("*") if p.is_file()] == []  # no copy left behind


def test_an_unconfirmed_upload_expires_and_its_archive_is_deleted(app, tmp_path,
                                                                  config_overrides):
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan",
                                           posts=["a"]))
    key = imp.storage_key
    assert worker_tasks.expire_imports() == 0  # still waiting: kept
    assert get_storage().exists(key)
    imp.confirm_by = datetime(2000, 1, 1)  # as if IMPORT_CONFIRM_MINUTES had passed
    db.session.commit()
    assert worker_tasks.expire_imports() == 1
    imp = fresh(imp)
    assert imp.status == Import.EXPIRED and not get_storage().exists(key)
    with pytest.raises(centre.ImportRefused):
        centre.prepare_confirm(imp)
    assert posts_of(susan) == []


def test_the_confirm_deadline_is_import_confirm_minutes_after_the_preview(app, tmp_path,
                                                                         config_overrides):
    app.config["IMPORT_CONFIRM_MINUTES"] = 30
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan",
                                           posts=["a"]))
    minutes = (imp.confirm_by - imp.task.finished_at).total_seconds() / 60
    assert 29 < minutes <= 30


def test_a_discarded_upload_is_cancelled_and_its_archive_deleted(app, tmp_path):
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan",
                                           posts=["a"]))
    centre.discard(imp)
    imp = fresh(imp)
    assert imp.status == TaskStatus.CANCELLED and stored_files(app) == []
    with pytest.raises(centre.ImportRefused):
        centre.prepare_confirm(imp)


def test_another_users_import_is_not_found(app, tmp_path):
    susan, other = make_user("susan"), make_user("other")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan",
                                           posts=["a"]))
    assert centre.own_import(susan, imp.id).id == imp.id
    assert centre.own_import(other, imp.id) is None
    assert centre.imports_of(other) == [] and [i.id for i in centre.imports_of(susan)] == [
        imp.id]


# --------------------------------------------------------------------------- mail, CLI

def test_the_done_mail_arrives_once_with_the_summary(app, tmp_path, smtp_server):
    susan = make_user("susan")
    make_user("bob")
    path = mastodon_archive(tmp_path / "archive.zip", account="susan", posts=["a", "b"],
                            boosts=1, following=["bob@x.example", "nobody@x.example"])
    imp = upload(susan, path)
    result = run_worker_burst()
    assert result.returncode == 0, result.stderr
    imp = fresh(imp)
    assert imp.status == Import.READY, imp.task.error
    assert smtp_server.handler_ref.messages == []  # no mail for the preview
    confirm(imp)
    result = run_worker_burst()
    assert result.returncode == 0, result.stderr
    imp = fresh(imp)
    assert imp.status == Import.FINISHED, imp.task.error
    [message] = smtp_server.handler_ref.messages
    assert message["To"] == "susan@example.com"
    assert message["Subject"] == "[Microblog] Your import is done"
    text = message.get_body(("plain",)).get_content()
    assert "Your import of archive.zip is done." in text
    assert "Posts imported: 2" in text and "Skipped (boosts and retweets): 1" in text
    assert "Accounts followed: 1" in text and "Accounts not found here: 1" in text
    assert f"{app.config['PUBLIC_BASE_URL']}/imports/{imp.id}" in text
    assert "Posts imported: 2" in message.get_body(("html",)).get_content()
    # The same task again (an operator's retry, RQ's after a lost worker): no second mail.
    assert importer.send_done_mail(imp, imp.task_id) is False
    assert len(smtp_server.handler_ref.messages) == 1


def test_the_cli_imports_an_archive_with_yes(app, runner, tmp_path):
    susan = make_user("susan")
    path = mastodon_archive(tmp_path / "archive.zip", account="susan", posts=["a", "b"],
                            boosts=1)
    result = runner.invoke(args=["posts", "import", path, "--user", "susan", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Posts found: 2" in result.output and "Imported: 2" in result.output
    assert [p.body for p in posts_of(susan)] == ["a", "b"]
    [imp] = centre.imports_of(susan)
    assert imp.status == Import.FINISHED and imp.storage_key is None
    # Again: previewed as already there, nothing added.
    result = runner.invoke(args=["posts", "import", path, "--user", "susan", "--yes"])
    assert "Already on the account: 2" in result.output and "Imported: 0" in result.output
    assert len(posts_of(susan)) == 2


def test_the_cli_asks_before_importing_and_a_no_imports_nothing(app, runner, tmp_path):
    susan = make_user("susan")
    path = posts_json(tmp_path / "posts.json", user="susan", posts=["a"])
    result = runner.invoke(args=["posts", "import", path, "--user", "susan"], input="n\n")
    assert result.exit_code == 0, result.output
    assert "Nothing was imported." in result.output and posts_of(susan) == []
    assert stored_files(app) == []


def test_the_cli_says_why_an_archive_is_refused(app, runner, tmp_path):
    make_user("susan")
    result = runner.invoke(args=["posts", "import", pdf_file(tmp_path / "a.zip"), "--user",
                                 "susan", "--yes"])
    assert result.exit_code == 1
    assert "looks like a PDF document" in result.output
    assert runner.invoke(args=["posts", "import", pdf_file(tmp_path / "b.zip"), "--user",
                               "nobody"]).exit_code == 1


def test_a_refusal_too_long_for_the_tasks_reason_is_kept_whole_on_the_import(app):
    from app.imports.readers.items import LOOKS_LIKE_GZIP, ArchiveRefused
    from app.jobs.failures import describe_failure, is_transient

    refused = ArchiveRefused.not_accepted(LOOKS_LIKE_GZIP)
    assert len(str(refused)) > 255 and not is_transient(refused)
    assert describe_failure(refused) == LOOKS_LIKE_GZIP  # what the file looked like
    susan = make_user("susan")
    imp = Import(user_id=susan.id)
    db.session.add(imp)
    db.session.commit()
    centre.record_refusal(imp, refused)
    assert centre.refusal(fresh(imp)) == str(refused)


def test_the_schedule_expires_unconfirmed_uploads_every_five_minutes(app):
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=app.redis)
    scheduler.load_config_from_file("app.jobs.cron")
    schedule = {job.func.__name__: job for job in scheduler.get_jobs()}
    assert schedule["expire_imports"].interval == 300
    assert schedule["expire_imports"].queue_name == "microblog-tasks"
