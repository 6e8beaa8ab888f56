"""The import's readers (app/imports/readers/): which kind an archive is, read from its content;
each kind's posts as their authors wrote them; what is skipped and why; broken items named by
their number; hostile files refused with a message a person understands; memory that stays
flat however long the archive; and our own three export formats read back exactly."""

from __future__ import annotations

import os
import random
import re
import tracemalloc
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from app.exports import formats
from app.imports.readers import (
    KINDS,
    REFUSALS,
    ArchivePost,
    ArchiveRefused,
    BrokenItem,
    Limits,
    SkippedItem,
    open_archive,
)
from app.imports.readers.mastodon import html_to_text
from app.imports.readers.x import parse_created_at
from app.models import PostOrigin
from tests.archives import (
    ABSENT,
    HOSTILE_TEXTS,
    encrypted_zip,
    hostile_mastodon_archive,
    hostile_x_archive,
    image_file,
    malformed_outbox_archive,
    malformed_posts_json,
    mastodon_archive,
    pdf_file,
    posts_csv,
    posts_json,
    stamp,
    truncated_zip,
    with_directory_count,
    write_zip,
    x_archive,
    zip_bomb,
    zip_with_many_members,
    zip_with_traversal_names,
)
from tests.conftest import make_user
from tests.test_export_formats import LANGUAGES, TRICKY, add_posts, stored_posts

OUR_README = (b"Microblog archive of alice\nFormat: microblog-activitystreams, version 1\n")
NO_LIMITS = Limits()


def read(path, limits: Limits = NO_LIMITS) -> list:
    with open_archive(str(path), limits) as archive:
        return list(archive.items())


def posts_of(items) -> list[str]:
    return [item.body for item in items if isinstance(item, ArchivePost)]


def refusal(path, limits: Limits = NO_LIMITS) -> str:
    """The message a file is refused with, whether at opening or while its items are read."""
    with pytest.raises(ArchiveRefused) as refused:
        read(path, limits)
    message = str(refused.value)
    assert refused.value.template in REFUSALS  # a message the catalogue knows
    assert "%(" not in message
    return message


# --------------------------------------------------------------------------- detection

BUILDERS = {
    "microblog-json": lambda path: posts_json(path, ["first", "second"]),
    "microblog-csv": lambda path: posts_csv(path, ["first", "second"]),
    "microblog-activitystreams": lambda path: mastodon_archive(
        path, ["first", "second"], members={"README.txt": OUR_README}),
    "mastodon": lambda path: mastodon_archive(path, ["first", "second"]),
    "x": lambda path: x_archive(path, ["first", "second"]),
}
# Each saved under a name that says something else: names are never looked at.
MISLEADING_NAMES = {"microblog-json": "archive.zip", "microblog-csv": "tweets.js",
                    "microblog-activitystreams": "posts.json", "mastodon": "posts.csv",
                    "x": "outbox.json"}


@pytest.mark.parametrize("kind", KINDS)
def test_the_kind_is_read_from_the_content_whatever_the_file_is_called(tmp_path, kind):
    path = BUILDERS[kind](tmp_path / MISLEADING_NAMES[kind])
    with open_archive(path) as archive:
        assert archive.kind == kind
        assert archive.origin == {"mastodon": PostOrigin.MASTODON, "x": PostOrigin.X}.get(
            kind, PostOrigin.MICROBLOG)
        # posts.csv does not say whose posts they are.
        assert archive.account == (None if kind == "microblog-csv" else "alice")
        assert posts_of(archive.items()) == ["first", "second"]


def test_an_archive_zipped_again_inside_a_folder_is_still_found(tmp_path):
    """Someone unpacks their archive to look at it, then zips the folder to upload it."""
    original = mastodon_archive(tmp_path / "original.zip", ["in a folder"])
    with zipfile.ZipFile(original) as source:
        files = {f"archive-20240301/{name}": source.read(name) for name in source.namelist()}
    files["__MACOSX/archive-20240301/._outbox.json"] = b"\0\5\26\7"
    path = write_zip(tmp_path / "again.zip", files)
    with open_archive(path) as archive:
        assert (archive.kind, archive.account) == ("mastodon", "alice")
        assert posts_of(archive.items()) == ["in a folder"]


@pytest.mark.parametrize("make, looks_like", [
    (pdf_file, "looks like a PDF document"),
    (image_file, "looks like an image"),
    (lambda p: p.write_text("Dear diary,\ntoday I moved to a new site.\nBye\n") and str(p),
     "looks like plain text"),
    (lambda p: p.write_text("<!DOCTYPE html><html><body>Your archive</body></html>")
     and str(p), "looks like a web page"),
    (lambda p: p.write_text("name,email\nbob,bob@example.com\n") and str(p),
     "looks like a CSV table, but not a Microblog posts.csv"),
    (lambda p: p.write_text('{"name": "a package", "version": "1.0.0"}') and str(p),
     "is JSON, but not a Microblog export"),
    (lambda p: p.write_text('[{"body": "a list of posts"}]') and str(p),
     "is JSON, but not a Microblog export"),
    (lambda p: p.write_text('{"@context": "https://www.w3.org/ns/activitystreams", '
                            '"type": "OrderedCollection", "orderedItems": []}') and str(p),
     "a Mastodon outbox.json on its own"),
    (lambda p: write_zip(p, {"photo.jpg": b"\xff\xd8\xff", "notes.txt": b"hi"}),
     "a zip archive without outbox.json or data/tweets.js"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + bytes(100)) and str(p),
     "gzip-compressed"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4) and str(p), "looks like binary data"),
    (lambda p: p.write_bytes(b"") or str(p), "This file is empty."),
])
def test_a_file_of_no_kind_we_read_is_refused_saying_what_it_looked_like(
        tmp_path, make, looks_like):
    message = refusal(make(tmp_path / "upload"))
    assert looks_like in message
    # ... and what would be accepted.
    assert "Mastodon archive (a zip with outbox.json)" in message
    assert "X (Twitter) archive" in message
    assert "posts.json, posts.csv or archive.zip" in message


def test_posts_json_of_a_newer_version_is_refused_as_such(tmp_path):
    path = tmp_path / "posts.json"
    path.write_text('{"format": "microblog-posts", "version": 7, "posts": []}')
    assert "newer version (7)" in refusal(path)


# --------------------------------------------------------------------------- our formats

def test_posts_json_items_each_post_skipped_or_broken_by_number(tmp_path):
    path = posts_json(tmp_path / "posts.json", [
        {"body": "kept", "timestamp": "2024-03-01T09:30:00.123456Z", "language": "ko"},
        {"body": "   "},
        {"body": ABSENT, "timestamp": "2024-03-01T09:30:00Z"},
        {"body": "bad time", "timestamp": "yesterday"},
        {"body": 42},
        {"body": "no language", "language": None, "timestamp": "2024-03-01T11:30:00+02:00"},
    ])
    items = read(path)
    assert items == [
        ArchivePost(1, "kept", datetime(2024, 3, 1, 9, 30), "ko", "1"),
        SkippedItem(2, "empty", "2"),
        BrokenItem(3, "no `body`", "3"),
        BrokenItem(4, "`timestamp` is not a date", "4"),
        BrokenItem(5, "`body` is not text", "5"),
        ArchivePost(6, "no language", datetime(2024, 3, 1, 9, 30), None, "6"),
    ]


def test_posts_json_with_a_byte_order_mark_and_a_list_that_is_not_objects(tmp_path):
    path = tmp_path / "posts.json"
    path.write_bytes(b'\xef\xbb\xbf \n{"format": "microblog-posts", "version": 1, "posts": ['
                     b'"just a string", {"id": 2, "body": "b", "timestamp": '
                     b'"2024-01-01T00:00:00Z"}]}')
    assert read(path) == [BrokenItem(1, "not a JSON object", None),
                          ArchivePost(2, "b", datetime(2024, 1, 1), None, "2")]


def test_posts_csv_cells_come_back_as_written_and_a_short_row_is_broken(tmp_path):
    path = posts_csv(tmp_path / "posts.csv", [
        {"body": "=1+1", "language": "en"}, {"body": "'quoted'"}, "a, b\nand \"c\""])
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write("9,2024-03-01T10:00:00Z,en\r\n\r\n10,2024-03-01T10:01:00Z,,after the gap\r\n")
    assert read(path) == [
        ArchivePost(1, "=1+1", stamp(0), "en", "1"),
        ArchivePost(2, "'quoted'", stamp(1), None, "2"),
        ArchivePost(3, "a, b\nand \"c\"", stamp(2), None, "3"),
        BrokenItem(4, "3 cells instead of 4", None),
        ArchivePost(5, "after the gap", datetime(2024, 3, 1, 10, 1), None, "10"),
    ]


def test_a_post_far_longer_than_the_compose_form_is_read_whole(tmp_path):
    long_post = "long " * 100_000  # 500 KB: more than the csv module's default cell
    for path in (posts_json(tmp_path / "posts.json", [long_post]),
                 posts_csv(tmp_path / "posts.csv", [long_post]),
                 mastodon_archive(tmp_path / "m.zip", [long_post]),
                 x_archive(tmp_path / "x.zip", [long_post])):
        assert posts_of(read(path)) == [long_post]


def test_items_can_be_read_again_from_the_start_with_the_same_numbers(tmp_path):
    paths = [BUILDERS[kind](tmp_path / kind) for kind in KINDS]
    for path in paths:
        with open_archive(path) as archive:
            first = list(archive.items())
            partial = next(iter(archive.items()))
            assert list(archive.items()) == first
            assert partial == first[0]


# --------------------------------------------------------------------------- Mastodon

@pytest.mark.parametrize("content, text", [
    ("<p>Hello world</p>", "Hello world"),
    ("<p>First paragraph</p><p>Second one</p>", "First paragraph\n\nSecond one"),
    ("<p>line one<br />line two<br>line three</p>", "line one\nline two\nline three"),
    ("<p>fish &amp; chips &lt;3 &quot;yum&quot; &#39;ok&#39; caf&eacute;</p>",
     "fish & chips <3 \"yum\" 'ok' café"),
    ('<p>see <a href="https://example.com/a/very/long/path/indeed" rel="nofollow noopener" '
     'translate="no" target="_blank"><span class="invisible">https://</span><span '
     'class="ellipsis">example.com/a/very/long/pat</span><span class="invisible">h/indeed'
     '</span></a> now</p>', "see https://example.com/a/very/long/path/indeed now"),
    ('<p><a href="https://mastodon.example/tags/python" class="mention hashtag" rel="tag">'
     '#<span>python</span></a> rocks</p>', "#python rocks"),
    ('<p><span class="h-card" translate="no"><a href="https://m.example/@bob" class="u-url '
     'mention">@<span>bob</span></a></span> hi</p>', "@bob hi"),
    ("<p>a <script>alert(1)</script>b<style>p{}</style></p>", "a b"),
    ('<p>x<img src=x onerror="alert(1)">y</p>', "xy"),
    ("plain text, no tags", "plain text, no tags"),
    ("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>", "<script>alert(1)</script>"),
    ("", ""),
])
def test_a_toots_html_becomes_the_text_a_person_wrote(content, text):
    assert html_to_text(content) == text


TOOTS = [
    "Hello, fediverse!",
    "a < b & c > d, \"quoted\" and 'single'",
    "two paragraphs\n\nthe second\nwith a line break",
    "links: https://example.com/a/very/long/path/that/goes/on?x=1&y=2 and http://b.example",
    "#hashtags and @mentions@elsewhere.example and @local",
    "emoji 😀🎉 and 한국어 and ñ",
    "&amp; stays as typed",
]


def test_mastodon_toots_come_back_as_their_authors_wrote_them(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", TOOTS)
    items = read(path)
    assert posts_of(items) == TOOTS
    assert [item.timestamp for item in items] == [stamp(n) for n in range(len(TOOTS))]
    assert all(item.language == "en" for item in items)
    assert items[0].original_id.startswith("https://mastodon.example/users/alice/statuses/")


def test_mastodon_skips_boosts_replies_direct_and_followers_only_but_keeps_threads(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", ["mine", "mine too"], boosts=3,
                            replies_to_others=2, direct=1, followers_only=2, self_replies=2)
    items = read(path)
    assert [item.item for item in items] == list(range(1, 13))
    assert posts_of(items) == ["mine", "mine too", "and another thing (0)",
                               "and another thing (1)"]
    skipped = [item.reason for item in items if isinstance(item, SkippedItem)]
    assert skipped == ["boost"] * 3 + ["reply"] * 2 + ["direct"] + ["private"] * 2


def test_an_unlisted_toot_is_kept(tmp_path):
    """Unlisted: to its followers, the public in cc (public, just off the local timeline)."""
    followers = "https://mastodon.example/users/alice/followers"
    path = mastodon_archive(tmp_path / "archive.zip", [
        {"text": "quiet", "to": [followers], "cc": ["https://www.w3.org/ns/activitystreams"
                                                    "#Public"]}])
    assert posts_of(read(path)) == ["quiet"]


def test_mastodon_time_language_and_content_warning(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", [
        {"text": "offset", "published": "2024-03-01T11:30:05.250+02:00", "language": "pt-BR"},
        {"text": "no language", "language": None},
        {"text": "spoilers inside", "summary": "film ending"},
    ])
    items = read(path)
    assert (items[0].timestamp, items[0].language) == (datetime(2024, 3, 1, 9, 30, 5), "pt_BR")
    assert items[1].language is None
    assert items[2].body == "CW: film ending\n\nspoilers inside"


def test_a_broken_toot_fails_alone_named_by_its_number(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", [
        "fine", {"text": "no date", "no_published": True}, {"text": "bad date",
                                                            "published": "soon"},
        {"html": "", "no_content": True}, "fine again"],
        extra_items=[{"type": "Like", "id": "https://mastodon.example/likes/1"}, "a string",
                     {"type": "Create", "object": "https://mastodon.example/statuses/1"}])
    items = read(path)
    broken = {item.item: item.reason for item in items if isinstance(item, BrokenItem)}
    assert broken == {2: "no `published`", 3: "`published` is not a date",
                      4: "no `content`", 6: "an activity of type Like, neither a post nor a boost",
                      7: "not a JSON object", 8: "its `object` is not a post"}
    assert posts_of(items) == ["fine", "fine again"]


def test_an_empty_toot_is_skipped_as_empty(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", [{"html": "<p></p>"}, "words"])
    assert [type(item).__name__ for item in read(path)] == ["SkippedItem", "ArchivePost"]


def test_mastodon_account_and_the_accounts_it_follows(tmp_path):
    path = mastodon_archive(tmp_path / "archive.zip", ["hi"], account="Alice_1",
                            following=["bob@elsewhere.example", "carol@mastodon.example"])
    with open_archive(path) as archive:
        assert archive.account == "Alice_1"
        assert list(archive.following()) == [(2, "bob@elsewhere.example"),
                                             (3, "carol@mastodon.example")]
    without = mastodon_archive(tmp_path / "plain.zip", ["hi"])
    with open_archive(without) as archive:
        assert list(archive.following()) == []


def test_an_outbox_that_breaks_off_yields_the_items_before_then_names_the_break(tmp_path):
    path = malformed_outbox_archive(tmp_path / "archive.zip", count=10, broken_at=7)
    seen = []
    with open_archive(path) as archive, pytest.raises(ArchiveRefused) as refused:
        for item in archive.items():
            seen.append(item)
    assert posts_of(seen) == [f"toot {n}" for n in range(1, 7)]
    assert str(refused.value) == ("outbox.json breaks off or is malformed at item 7 (the "
                                  "items before it were read).")


# --------------------------------------------------------------------------- X

def test_tweets_are_unescaped_and_their_t_co_links_expanded(tmp_path):
    path = x_archive(tmp_path / "x.zip", [
        "fish & chips <3 > 2",
        "typed &amp; literally",
        {"text": "read https://t.co/AbC123 and https://t.co/XyZ789",
         "urls": [("https://t.co/AbC123", "https://example.com/article?a=1&b=2"),
                  ("https://t.co/XyZ789", "https://example.org/")]},
        {"text": "my cat https://t.co/Ph0t0",
         "media": [("https://t.co/Ph0t0", "https://x.com/alice/status/1/photo/1")]},
    ])
    assert posts_of(read(path)) == [
        "fish & chips <3 > 2",
        "typed &amp; literally",
        "read https://example.com/article?a=1&b=2 and https://example.org/",
        "my cat https://x.com/alice/status/1/photo/1",
    ]


def test_tweets_keep_their_time_and_language(tmp_path):
    path = x_archive(tmp_path / "x.zip", [
        {"text": "dated", "created_at": "Wed Oct 10 20:19:24 +0000 2018", "lang": "es"},
        {"text": "undetermined", "lang": "und"},
        {"text": "#only #tags", "lang": "qht"},
    ])
    items = read(path)
    assert (items[0].timestamp, items[0].language) == (datetime(2018, 10, 10, 20, 19, 24), "es")
    assert [items[1].language, items[2].language] == [None, None]
    assert parse_created_at("Wed Oct 10 20:19:24 +0130 2018") == datetime(2018, 10, 10, 18,
                                                                           49, 24)
    assert parse_created_at("Octember 10") is None


def test_x_skips_retweets_and_replies_to_others_but_keeps_threads(tmp_path):
    path = x_archive(tmp_path / "x.zip", ["mine"], retweets=2, replies=3, self_replies=1,
                     extra_items=[{"tweet": {"retweeted_status": {}, "full_text": "quoted",
                                             "id_str": "5"}}])
    items = read(path)
    assert posts_of(items) == ["mine", "and another thing (0)"]
    assert [item.reason for item in items if isinstance(item, SkippedItem)] == (
        ["boost"] * 2 + ["reply"] * 3 + ["boost"])


def test_an_x_archive_without_its_account_file_skips_every_reply(tmp_path):
    """Without data/account.js there is no telling a thread from a reply to someone else:
    every reply is skipped (as a reply), none imported as if it stood alone."""
    path = x_archive(tmp_path / "x.zip", ["mine"], replies=1, self_replies=1, account=None)
    with open_archive(path) as archive:
        assert archive.account is None
        items = list(archive.items())
    assert [getattr(item, "reason", "post") for item in items] == ["post", "reply", "reply"]


def test_older_and_larger_x_archives(tmp_path):
    older = x_archive(tmp_path / "older.zip", ["old one", "old two"], wrapped=False,
                      tweets_file="data/tweet.js")
    assert posts_of(read(older)) == ["old one", "old two"]
    larger = x_archive(tmp_path / "larger.zip", [f"tweet {n}" for n in range(7)], parts=3)
    items = read(larger)
    assert [item.item for item in items] == list(range(1, 8))
    assert posts_of(items) == [f"tweet {n}" for n in range(7)]


def test_a_broken_tweet_fails_alone_and_a_broken_file_is_refused(tmp_path):
    path = x_archive(tmp_path / "x.zip", ["fine", {"text": "when?", "created_at": "never"}],
                     extra_items=[{"tweet": {"id_str": "7", "full_text": "undated"}}])
    items = read(path)
    assert [(item.item, item.reason) for item in items if isinstance(item, BrokenItem)] == [
        (2, "`created_at` is not a date"), (3, "no `created_at`")]
    not_js = write_zip(tmp_path / "not-js.zip", {"data/tweets.js": b"[]"})
    assert "data/tweets.js does not start as an X archive's file does" in refusal(not_js)


# --------------------------------------------------------------------------- hostile files

def test_a_zip_bomb_is_refused_without_being_unpacked(tmp_path):
    path = zip_bomb(tmp_path / "bomb.zip")
    assert os.path.getsize(path) < 1024 * 1024
    tracemalloc.start()
    try:
        message = refusal(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "outbox.json unpacks to more than 200 times its compressed size" in message
    assert "zip bomb" in message
    assert peak < 4 * 1024 * 1024


def test_a_zip_with_too_many_members_is_refused(tmp_path):
    path = zip_with_many_members(tmp_path / "many.zip", 120)
    assert refusal(path, Limits(max_members=100)) == (
        "This zip archive holds 120 files, more than the 100 allowed.")
    assert read(path, Limits(max_members=120)) == []
    # The end record may lie about the count: the directory's size tells.
    with_directory_count(path, 3)
    assert "more than the 10 allowed" in refusal(path, Limits(max_members=10))


def test_an_encrypted_zip_is_refused_as_such(tmp_path):
    assert refusal(encrypted_zip(tmp_path / "locked.zip")) == (
        "This zip archive is encrypted (password-protected).")


def test_the_bytes_unpacked_are_counted_across_the_files_read(tmp_path):
    """Each part of the tweets is under the limit, together they are over: the reading stops
    in the second part, after the items before it."""
    path = x_archive(tmp_path / "x.zip", [f"tweet number {n}" for n in range(400)], parts=2)
    with zipfile.ZipFile(path) as archive:
        first, second = (archive.getinfo(name).file_size
                         for name in ("data/tweets.js", "data/tweets-part1.js"))
    limits = Limits(max_uncompressed=first + second // 2)
    seen = []
    with open_archive(path, limits) as archive, pytest.raises(ArchiveRefused) as refused:
        for item in archive.items():
            seen.append(item)
    assert str(refused.value) == (f"This zip archive unpacks to more than "
                                  f"{limits.max_uncompressed:,} bytes, the limit.")
    assert 200 <= len(seen) < 400
    # A member that says it is larger than the limit is refused before it is read.
    assert "unpacks to more than 1,000 bytes" in refusal(path, Limits(max_uncompressed=1000))


def test_member_names_that_climb_out_of_a_folder_are_never_paths(tmp_path, monkeypatch):
    workdir = tmp_path / "deep" / "er"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    path = zip_with_traversal_names(tmp_path / "climb.zip")
    assert posts_of(read(path)) == ["traversal survivor"]
    only_climbing = zip_with_traversal_names(tmp_path / "only.zip", with_outbox=False)
    assert "zip archive without outbox.json" in refusal(only_climbing)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["climb.zip", "deep", "er",
                                                           "only.zip"]
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_a_truncated_zip_is_refused_as_damaged(tmp_path):
    assert "looks like a zip archive, but it is damaged or truncated" in refusal(
        truncated_zip(tmp_path / "cut.zip"))


def test_a_posts_json_malformed_at_item_n_yields_the_items_before_then_names_it(tmp_path):
    path = malformed_posts_json(tmp_path / "posts.json", count=5000, broken_at=3112)
    seen = []
    with open_archive(path) as archive, pytest.raises(ArchiveRefused) as refused:
        for item in archive.items():
            seen.append(item)
    assert len(seen) == 3111 and seen[-1].body == "post 3111"
    assert str(refused.value) == ("The file breaks off or is malformed at item 3,112 (the "
                                  "items before it were read).")


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_file_is_read_or_refused_never_crashes_the_reader(tmp_path, kind):
    """Bytes changed at random and files cut short (a fixed seed: the same cases every run):
    each is read, or refused with ArchiveRefused; no other error escapes."""
    data = Path(BUILDERS[kind](tmp_path / "original")).read_bytes()
    rng = random.Random(20)
    outcomes = set()
    for case in range(150):
        damaged = bytearray(data)
        if case % 3 == 0:
            damaged = damaged[:rng.randrange(len(damaged))]
        else:
            for _ in range(1 if case % 3 == 1 else 20):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path = tmp_path / "damaged"
        path.write_bytes(damaged)
        try:
            with open_archive(str(path)) as archive:
                list(archive.items())
                list(archive.following())
            outcomes.add("read")
        except ArchiveRefused as refused:
            assert refused.template in REFUSALS
            outcomes.add("refused")
    assert "refused" in outcomes


def test_markup_in_an_archive_comes_back_as_text(tmp_path):
    mastodon = read(hostile_mastodon_archive(tmp_path / "m.zip"))
    typed, raw = posts_of(mastodon)[:2], posts_of(mastodon)[2:]
    assert typed == HOSTILE_TEXTS  # what a person typed stays what they typed
    assert raw == ["raw  and  markup", "click"]  # a hostile server's markup is gone
    assert posts_of(read(hostile_x_archive(tmp_path / "x.zip"))) == HOSTILE_TEXTS


# --------------------------------------------------------------------------- memory

def peak_while_reading(path) -> tuple[int, int]:
    """(posts read, peak bytes allocated while reading them)."""
    tracemalloc.start()
    try:
        with open_archive(path) as archive:
            count = sum(1 for item in archive.items() if isinstance(item, ArchivePost))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


@pytest.mark.once
def test_memory_stays_flat_from_20_000_to_200_000_posts(tmp_path):
    small = posts_json(tmp_path / "small.json", count=20_000)
    large = posts_json(tmp_path / "large.json", count=200_000)
    small_count, small_peak = peak_while_reading(small)
    large_count, large_peak = peak_while_reading(large)
    assert (small_count, large_count) == (20_000, 200_000)
    # What stays is about one read buffer (64 KiB) of posts as Python objects.
    assert large_peak < os.path.getsize(large) / 10
    assert large_peak < 2 * small_peak


# --------------------------------------------------------------------------- round trip

def export_to_file(fmt: str, user, path: Path) -> str:
    with open(path, "wb") as out:
        formats.write_export(fmt, user, out)
    return str(path)


@pytest.mark.parametrize("fmt", list(formats.FORMATS))
def test_our_own_exports_are_read_back_as_they_were_written(app, tmp_path, fmt):
    user = make_user("exporter")
    other = make_user("followed")
    user.follow(other)
    add_posts(user, TRICKY, LANGUAGES)
    path = export_to_file(fmt, user, tmp_path / "upload")  # no telling name
    with open_archive(path) as archive:
        assert archive.kind == {"json": "microblog-json", "csv": "microblog-csv",
                                "activitystreams": "microblog-activitystreams"}[fmt]
        assert archive.origin == PostOrigin.MICROBLOG
        items = list(archive.items())
        following = list(archive.following())
    assert all(isinstance(item, ArchivePost) for item in items)
    assert [(item.body, item.timestamp, item.language) for item in items] == [
        (body, timestamp.replace(microsecond=0), language)
        for body, timestamp, language in stored_posts(user)]
    assert [item.item for item in items] == list(range(1, len(TRICKY) + 1))
    if fmt == "activitystreams":
        assert archive.account == "exporter"
        assert all(re.fullmatch(r"https?://.+/user/exporter#post-\d+", item.original_id)
                   for item in items)
        assert [address.split("@")[0] for _, address in following] == ["followed"]
    else:
        assert following == []
        assert items[0].original_id.isdigit()
    if fmt == "json":
        assert archive.account == "exporter"

