"""The activitystreams export: archive.zip laid out as Mastodon's archive, so that tools that
read Mastodon archives open it. Described in docs/exports.md.

- outbox.json: the posts, oldest first, as an ActivityStreams 2.0 OrderedCollection of Create
  activities of Note objects. A Note's source.content is the post exactly as written (read back
  by read_outbox); its content is the same text as HTML, escaped.
- actor.json: the profile, an ActivityStreams Person.
- following_accounts.csv: the accounts followed, in the layout Mastodon's follow import reads.
- README.txt: what the files are, the format's name and version.

Ids are URLs under PUBLIC_BASE_URL: the profile page for the Person, the profile page with
the fragment #post-<id> for a Note (#post-<id>/activity for its Create).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO
from urllib.parse import quote

import sqlalchemy as sa

from app import db
from app.exports.posts import count_posts, iter_post_batches, parse_timestamp
from app.models import User, followers, utcnow
from app.urls import public_host, public_url

ARCHIVE_VERSION = 1
AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
ARCHIVE_MEMBERS = ("README.txt", "actor.json", "outbox.json", "following_accounts.csv")
ARCHIVE_COMPRESSLEVEL = 1
FOLLOWING_HEADER = ("Account address", "Show boosts", "Notify on new posts", "Languages")


def actor_url(user: User) -> str:
    """The user's public profile page, the ActivityStreams id of their Person. Its path is
    written out, as app/exports/delivery.py writes the export centre's: a worker's app has no
    URL map (create_app(web=False)). /user/<username> is the tutorial's, and stays (SPEC);
    the username quoted as Werkzeug's URL map quotes a path segment."""
    path = "/user/" + quote(user.username, safe="!$&'()*+,/:;=@")
    return public_url(path)


def html_paragraph(text: str) -> str:
    """Plain text as an HTML paragraph: escaped, line breaks as <br>."""
    escaped = html.escape(text).replace("\r\n", "\n").replace("\r", "\n")
    return "<p>" + escaped.replace("\n", "<br>") + "</p>"


def write_activitystreams(user: User, out: BinaryIO,
                          on_progress: Callable[[int], None] | None, batch_size: int) -> int:
    """archive.zip (deflated, ZIP64 entries), laid out as Mastodon's archive: README.txt,
    actor.json, outbox.json, following_accounts.csv. The posts are those the account had
    when the export started (totalItems is counted first; posts written since are newer,
    so they come last and are left out)."""
    exported_at = utcnow().replace(microsecond=0)
    actor = actor_url(user)
    total = count_posts(user)
    # Deflate level 1: three times as fast as the default (6) on posts, for a file 10% larger.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=ARCHIVE_COMPRESSLEVEL) as archive:
        archive.writestr("README.txt", _archive_readme(user, actor, total, exported_at))
        archive.writestr("actor.json", _actor_json(user, actor))
        # Streamed entries: ZIP64 from the start, as their size is not known in advance.
        with archive.open("outbox.json", "w", force_zip64=True) as f:
            written = _write_outbox(f, actor, total, user, on_progress, batch_size)
        with archive.open("following_accounts.csv", "w", force_zip64=True) as f:
            _write_following(f, user, batch_size)
    return written


def _write_outbox(out: BinaryIO, actor: str, total: int, user: User,
                  on_progress: Callable[[int], None] | None, batch_size: int) -> int:
    """outbox.json, one activity a line: {"@context": ..., "totalItems": N, "orderedItems": [
    {"id": ..., "type": "Create", ..., "object": {"id": ..., "type": "Note", ...}},
    ...
    ]}"""
    encode = json.encoder.encode_basestring
    header = json.dumps({"@context": AS_CONTEXT, "id": "outbox.json",
                         "type": "OrderedCollection", "totalItems": total})
    actor_json = encode(actor)
    id_prefix = actor_json[:-1] + "#post-"  # an id's JSON string, up to the post's id
    to_public = f'"to": ["{AS_PUBLIC}"]'

    def activity(post_id: int, body: str, published: str, language: str | None) -> str:
        content = encode(html_paragraph(body))
        content_map = ("" if not language else
                       f'"contentMap": {{{encode(language.replace("_", "-"))}: {content}}}, ')
        return (f'{{"id": {id_prefix}{post_id}/activity", "type": "Create", '
                f'"actor": {actor_json}, "published": "{published}", {to_public}, '
                f'"object": {{"id": {id_prefix}{post_id}", "type": "Note", '
                f'"attributedTo": {actor_json}, "published": "{published}", {to_public}, '
                f'"content": {content}, {content_map}'
                f'"source": {{"content": {encode(body)}, "mediaType": "text/plain"}}}}}}')

    written = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=False)
    try:
        text.write(header[:-1] + ', "orderedItems": [')
        for rows in iter_post_batches(user, batch_size) if total else ():
            rows = rows[:total - written]
            # One line per post, written as it is made: a batch's activities are several
            # times the size of its posts.
            text.write("\n" if not written else ",\n")
            text.write(activity(*rows[0]))
            text.writelines(",\n" + activity(*row) for row in rows[1:])
            written += len(rows)
            if on_progress is not None:
                on_progress(written)
            if written >= total:
                break
        if written != total:  # posts cannot be deleted today; if they ever can, say so
            raise RuntimeError(f"{total - written} post(s) disappeared during the export")
        text.write("\n]}\n")
        text.flush()
    finally:
        text.detach()
    return written


def _actor_json(user: User, actor: str) -> str:
    person = {"@context": AS_CONTEXT, "id": actor, "type": "Person",
              "preferredUsername": user.username, "name": user.username}
    if user.about_me:
        person["summary"] = html_paragraph(user.about_me)
    person.update({"url": actor, "outbox": "outbox.json"})
    return json.dumps(person, ensure_ascii=False, indent=2) + "\n"


def _write_following(out: BinaryIO, user: User, batch_size: int) -> None:
    """following_accounts.csv as Mastodon writes and imports it (Settings > Import and
    export): `username@host,true,false,` for each account followed, by username."""
    host = public_host()
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(FOLLOWING_HEADER)
        for usernames in _iter_followed_usernames(user, batch_size):
            writer.writerows([(f"{name}@{host}", "true", "false", "") for name in usernames])
        text.flush()
    finally:
        text.detach()


def _iter_followed_usernames(user: User, batch_size: int) -> Iterator[list[str]]:
    last = None
    while True:
        query = (sa.select(User.username)
                 .join(followers, followers.c.followed_id == User.id)
                 .where(followers.c.follower_id == user.id, User.id != user.id))
        if last is not None:
            query = query.where(User.username > last)
        names = db.session.scalars(query.order_by(User.username).limit(batch_size)).all()
        if not names:
            return
        yield names
        last = names[-1]


def _archive_readme(user: User, actor: str, total: int, exported_at: datetime) -> str:
    return f"""Microblog archive of {user.username} ({actor})
Format: microblog-activitystreams, version {ARCHIVE_VERSION}
Exported at: {exported_at.isoformat()}Z

outbox.json             your {total} posts, oldest first: an ActivityStreams 2.0
                        OrderedCollection of Create activities of Note objects, laid out
                        as in a Mastodon archive. Each Note's source.content is the post
                        exactly as written; its content is the same text as HTML.
actor.json              your profile, an ActivityStreams Person.
following_accounts.csv  the accounts you follow, in the layout of Mastodon's follow import.
README.txt              this file.

Post ids are {actor}#post-<number>.
ActivityStreams 2.0: https://www.w3.org/TR/activitystreams-core/
"""


def read_outbox(source: str | os.PathLike | BinaryIO) -> list[tuple[str, datetime, str | None]]:
    """(body, timestamp, language) of each post in an archive.zip's outbox.json, in order."""
    with zipfile.ZipFile(source) as archive, archive.open("outbox.json") as f:
        outbox = json.load(f)
    posts = []
    for activity in outbox["orderedItems"]:
        note = activity["object"]
        languages = list(note.get("contentMap", {}))
        posts.append((note["source"]["content"], parse_timestamp(note["published"]),
                      languages[0].replace("-", "_") if languages else None))
    return posts
