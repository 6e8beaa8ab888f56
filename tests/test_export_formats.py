"""The three export formats (app/exports/formats.py), written into a file as the worker writes
them: exact round trip of awkward posts, order, empty accounts, progress, the CSV formula rule,
the ActivityStreams archive's layout, and memory that does not grow with the number of posts."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import traceback
import tracemalloc
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db
from app.exports import activitystreams, formats
from app.exports.actions import start_export
from app.exports.storage import get_storage
from app.models import Export, Post, User
from tests.conftest import make_user, run_jobs_in_process

FORMATS = list(formats.FORMATS)
BASE = datetime(2024, 3, 1, 9, 30, 0)

TRICKY = [
    "<script>alert(1)</script>",
    "&amp; is not &",
    'she said "hi"',
    "it's mine",
    "a, b, and c",
    "first line\nsecond line",
    "windows line\r\nnext",
    "emoji 😀🎉 and ñ",
    "안녕하세요, 한국어 게시물입니다",
    "=1+1",
    "=HYPERLINK(\"http://evil.example\",\"click\")",
    "+33 6 12 34 56 78",
    "-2 degrees",
    "@SUM(A1:A2)",
    "'single quoted'",
    "'=1+1",
    "''two quotes",
    "\tstarts with a tab",
    "\rstarts with a carriage return",
    "plain",
]
LANGUAGES = ["en", "ko", None, "es"]


def add_posts(user, bodies, languages=(None,), stamps=None):
    """Posts with known timestamps (one minute apart unless given) and languages."""
    stamps = stamps or [BASE + timedelta(minutes=i, microseconds=i * 7) for i in
                        range(len(bodies))]
    for i, (body, stamp) in enumerate(zip(bodies, stamps, strict=True)):
        db.session.add(Post(body=body, timestamp=stamp, author=user,
                            language=languages[i % len(languages)]))
    db.session.commit()


def export(fmt, user, **kwargs) -> bytes:
    out = io.BytesIO()
    formats.write_export(fmt, user, out, **kwargs)
    return out.getvalue()


def read_back(fmt, data: bytes) -> list[tuple[str, datetime, str | None]]:
    """(body, timestamp, language) of every post in an export, in the file's order."""
    if fmt == "json":
        return [(p["body"], formats.parse_timestamp(p["timestamp"]), p["language"])
                for p in json.loads(data)["posts"]]
    if fmt == "csv":
        return [(p["body"], p["timestamp"], p["language"])
                for p in formats.read_posts_csv(io.BytesIO(data))]
    return activitystreams.read_outbox(io.BytesIO(data))


def stored_posts(user) -> list[tuple[str, datetime, str | None]]:
    return [tuple(row) for row in db.session.execute(
        sa.select(Post.body, Post.timestamp, Post.language)
        .where(Post.user_id == user.id).order_by(Post.timestamp, Post.id))]


def zip_member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


# --------------------------------------------------------------------------- every format

@pytest.mark.parametrize("fmt", FORMATS)
def test_awkward_posts_and_their_languages_round_trip_exactly(app, fmt):
    user = make_user()
    add_posts(user, TRICKY, LANGUAGES)
    posts = read_back(fmt, export(fmt, user))
    assert posts == stored_posts(user)
    assert [body for body, _, _ in posts] == TRICKY
    assert {language for _, _, language in posts} == set(LANGUAGES)


@pytest.mark.parametrize("fmt", FORMATS)
def test_posts_come_out_oldest_first_across_batches(app, fmt):
    user = make_user()
    make_user("other", posts=["not mine"])
    # Ids are not in time order, and two posts share a timestamp.
    minutes = (5, 1, 3, 1, 0, 4)
    add_posts(user, [f"post {m}" for m in minutes],
              stamps=[BASE + timedelta(minutes=m) for m in minutes])
    posts = read_back(fmt, export(fmt, user, batch_size=2))
    assert [stamp for _, stamp, _ in posts] == sorted(BASE + timedelta(minutes=m)
                                                      for m in minutes)
    assert sorted(body for body, _, _ in posts) == sorted(f"post {m}" for m in minutes)


def test_timestamps_are_written_as_isoformat_with_a_z_whatever_the_database_holds(app):
    """The exports turn the database's value into the text directly (no datetime on
    SQLite): with and without microseconds it is isoformat() + "Z"; a text that SQLAlchemy
    did not write there (another program's, on SQLite) is parsed."""
    user = make_user()
    stamps = [BASE, BASE + timedelta(seconds=1, microseconds=10), BASE + timedelta(minutes=1)]
    add_posts(user, ["whole second", "microseconds", "stored by hand"], stamps=stamps)
    if db.engine.dialect.name == "sqlite":  # the third one as another program writes it
        db.session.execute(sa.text("UPDATE post SET timestamp = :t WHERE body = :b"),
                           {"t": f"{stamps[2]:%Y-%m-%d %H:%M:%S}", "b": "stored by hand"})
        db.session.commit()
    written = [p["timestamp"] for p in json.loads(export("json", user))["posts"]]
    assert written == [stamp.isoformat() + "Z" for stamp in stamps]
    assert written[0].endswith(":00Z") and written[1].endswith(".000010Z")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_account_without_posts_exports_an_empty_file_of_its_format(app, fmt):
    user = make_user()
    data = export(fmt, user)
    assert read_back(fmt, data) == []
    if fmt == "csv":
        assert data == b"\xef\xbb\xbfid,timestamp,language,body\r\n"
    if fmt == "activitystreams":
        outbox = json.loads(zip_member(data, "outbox.json"))
        assert outbox["totalItems"] == 0 and outbox["orderedItems"] == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_progress_is_reported_after_each_batch_and_may_stop_the_export(app, fmt):
    user = make_user(posts=[f"p{i}" for i in range(5)])
    seen = []
    assert formats.write_export(fmt, user, io.BytesIO(), seen.append, batch_size=2) == 5
    assert seen == [2, 4, 5]

    def cancelled(done):
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        formats.write_export(fmt, user, io.BytesIO(), cancelled, batch_size=2)


@pytest.fixture
def storage_folder(app):
    """Export storage, emptied afterwards (its files are in folders, which the app fixture
    does not remove)."""
    yield get_storage()
    for entry in Path(app.config["EXPORT_FOLDER"]).glob("*"):
        if entry.is_dir():
            shutil.rmtree(entry)


@pytest.mark.parametrize("fmt", ["csv", "activitystreams"])
def test_an_export_started_in_a_format_is_stored_in_that_format(app, storage_folder, fmt):
    user = make_user()
    add_posts(user, TRICKY[:4], LANGUAGES)
    export_id = start_export(user, fmt).id
    run_jobs_in_process(app)
    db.session.expire_all()
    export = db.session.get(Export, export_id)
    assert export.status == "finished" and export.filename == formats.FORMATS[fmt].filename
    data = b"".join(storage_folder.read(export.storage_key))
    assert export.posts_count == 4 and export.size == len(data)
    assert read_back(fmt, data) == stored_posts(user)


# --------------------------------------------------------------------------- csv

def test_csv_is_what_pythons_csv_module_and_spreadsheets_expect(app):
    user = make_user()
    add_posts(user, TRICKY, LANGUAGES)
    data = export("csv", user)
    assert data.startswith(b"\xef\xbb\xbfid,timestamp,language,body\r\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["id", "timestamp", "language", "body"]
    assert len(rows) == 1 + len(TRICKY)
    by_body = {row[3]: row for row in rows[1:]}
    assert by_body["'=1+1"][2] == "ko"  # the neutralised cell, its post's language
    assert "''=1+1" in by_body and "'''two quotes" in by_body and "'@SUM(A1:A2)" in by_body
    assert "plain" in by_body and "<script>alert(1)</script>" in by_body
    assert by_body["'\rstarts with a carriage return"][1].endswith("Z")


def test_no_csv_cell_starts_with_a_formula_trigger(app):
    user = make_user()
    add_posts(user, TRICKY, LANGUAGES)
    rows = list(csv.reader(io.StringIO(export("csv", user).decode("utf-8-sig"), newline="")))
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(formats.FORMULA_TRIGGERS)]


@pytest.mark.parametrize("text", ["=", "+", "-", "@", "\t", "\r", "'", "''", "'=", "=x",
                                  "'x", "x'", "x=", "", "a"])
def test_neutralising_a_cell_is_undone_exactly(text):
    cell = formats.neutralise_cell(text)
    assert not cell.startswith(formats.FORMULA_TRIGGERS)
    assert formats.restore_cell(cell) == text


def test_reading_a_file_that_is_not_a_posts_csv_is_refused():
    with pytest.raises(ValueError, match="not a posts.csv"):
        list(formats.read_posts_csv(io.BytesIO(b"name,age\r\nx,1\r\n")))


# --------------------------------------------------------------------------- activitystreams

@pytest.fixture
def archive(app):
    """An activitystreams export of an account with the tricky posts, a profile and follows."""
    user = make_user()
    user.about_me = "I <b>like</b> \"quotes\" & more\nand lines"
    for name in ("zoe", "adam", "min-jun", "stranger"):
        db.session.add(User(username=name, email=f"{name}@example.com"))
    db.session.flush()
    for name in ("zoe", "adam", "min-jun"):
        user.follow(db.session.scalar(sa.select(User).where(User.username == name)))
    user.follow(user)  # not an account to import
    add_posts(user, TRICKY, LANGUAGES)
    return user, export("activitystreams", user)


def test_archive_holds_exactly_the_four_files_deflated(archive):
    _, data = archive
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted(activitystreams.ARCHIVE_MEMBERS)
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert zf.testzip() is None
    readme = zip_member(data, "README.txt").decode("utf-8")
    assert f"microblog-activitystreams, version {activitystreams.ARCHIVE_VERSION}" in readme


def test_outbox_is_an_ordered_collection_of_created_notes(archive, app):
    user, data = archive
    outbox = json.loads(zip_member(data, "outbox.json"))
    actor = app.config["PUBLIC_BASE_URL"] + "/user/susan"
    assert outbox["@context"] == "https://www.w3.org/ns/activitystreams"
    assert outbox["type"] == "OrderedCollection"
    assert outbox["totalItems"] == len(outbox["orderedItems"]) == len(TRICKY)
    post_ids = [row[0] for row in db.session.execute(
        sa.select(Post.id).where(Post.user_id == user.id).order_by(Post.timestamp))]
    for item, post_id, (body, stamp, language) in zip(
            outbox["orderedItems"], post_ids, stored_posts(user), strict=True):
        note = item["object"]
        assert item["type"] == "Create" and note["type"] == "Note"
        assert item["actor"] == note["attributedTo"] == actor
        assert note["id"] == f"{actor}#post-{post_id}"
        assert item["id"] == f"{actor}#post-{post_id}/activity"
        assert item["to"] == note["to"] == ["https://www.w3.org/ns/activitystreams#Public"]
        assert item["published"] == note["published"] == stamp.isoformat() + "Z"
        assert note["source"] == {"content": body, "mediaType": "text/plain"}
        assert note.get("contentMap", {}) == ({language: note["content"]} if language else {})
    contents = {item["object"]["source"]["content"]: item["object"]["content"]
                for item in outbox["orderedItems"]}
    assert not [html for html in contents.values() if "<script" in html]
    assert contents["<script>alert(1)</script>"] == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert contents["&amp; is not &"] == "<p>&amp;amp; is not &amp;</p>"
    assert contents["first line\nsecond line"] == "<p>first line<br>second line</p>"
    assert contents["windows line\r\nnext"] == "<p>windows line<br>next</p>"


def test_actor_is_the_profile_as_a_person(archive, app):
    _, data = archive
    actor = json.loads(zip_member(data, "actor.json"))
    url = app.config["PUBLIC_BASE_URL"] + "/user/susan"
    assert actor["type"] == "Person" and actor["id"] == actor["url"] == url
    assert actor["preferredUsername"] == "susan"
    assert actor["summary"] == ("<p>I &lt;b&gt;like&lt;/b&gt; &quot;quotes&quot; &amp; more"
                                "<br>and lines</p>")
    assert actor["outbox"] == "outbox.json"


def test_following_accounts_csv_lists_the_followed_accounts_for_mastodons_import(archive, app):
    _, data = archive
    host = app.config["PUBLIC_BASE_URL"].split("://")[1].split(":")[0].split("/")[0]
    rows = list(csv.reader(io.StringIO(zip_member(data, "following_accounts.csv")
                                       .decode("utf-8"), newline="")))
    assert rows[0] == ["Account address", "Show boosts", "Notify on new posts", "Languages"]
    assert [row[0] for row in rows[1:]] == [f"{name}@{host}" for name in
                                            ("adam", "min-jun", "zoe")]
    assert all(row[1:] == ["true", "false", ""] for row in rows[1:])


def test_posts_written_during_the_export_are_left_out_of_the_outbox(app):
    user = make_user(posts=["one", "two", "three"])

    def someone_posts(done):
        db.session.add(Post(body=f"new after {done}", author=user))
        db.session.commit()

    data = io.BytesIO()
    assert formats.write_export("activitystreams", user, data, someone_posts, 1) == 3
    outbox = json.loads(zip_member(data.getvalue(), "outbox.json"))
    assert outbox["totalItems"] == 3
    assert [i["object"]["source"]["content"] for i in outbox["orderedItems"]] == [
        "one", "two", "three"]


# --------------------------------------------------------------------------- memory

MANY = 10_000


def peak_mb_alone(work) -> float:
    """The peak of what `work()` allocates, traced in a forked copy of this process: the copy
    runs this thread alone, so what other threads of the test process allocate meanwhile (an
    earlier test's server or pipe readers, on a busy machine still at work) is not counted."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: report the peak, or print why not, and exit without cleanup
        code = 1
        try:
            os.close(read)
            db.engine.dispose(close=False)  # the parent's connections stay the parent's
            tracemalloc.start()
            work()
            os.write(write, str(tracemalloc.get_traced_memory()[1]).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        peak = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and peak, "the export failed (see stderr)"
    return int(peak) / 2**20


def test_memory_stays_flat_whatever_the_number_of_posts(app, tmp_path):
    """One batch in memory at a time: the peak is far below what the posts take, in the
    database's rows or in the file."""
    user = make_user()
    body = "A long post, with a comma, \"quotes\", an emoji 😀, 한국어 and <b>markup</b>. " * 3
    for start in range(0, MANY, 5000):
        db.session.execute(sa.insert(Post), [
            {"body": f"{body[:270]}{i}", "timestamp": BASE + timedelta(seconds=i),
             "user_id": user.id, "language": "ko"} for i in range(start, start + 5000)])
    db.session.commit()
    peaks = {}
    for fmt in FORMATS:
        path = tmp_path / formats.FORMATS[fmt].filename

        def export(fmt=fmt, path=path):
            with open(path, "wb") as out:
                assert formats.write_export(fmt, user, out, batch_size=200) == MANY

        peaks[fmt] = peak_mb_alone(export)
        if fmt != "activitystreams":  # (compressed, the archive is small)
            assert path.stat().st_size > 2.5 * 2**20
    # 10,000 such posts take 11 MB as Python strings (emoji: 4 bytes a character); a
    # batch of 200, 0.2 MB.
    assert max(peaks.values()) < 2, peaks
