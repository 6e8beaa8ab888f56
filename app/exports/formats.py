"""Building an export of a user's posts, one writer per format. Knows nothing about RQ: it
streams rows from the database in batches into a file and reports how many posts it wrote.

Every writer holds one batch of posts in memory at a time, whatever the number of posts
(app/exports/posts.py reads them). The formats are described, byte by byte, in
docs/exports.md:

- json: posts.json, the seed's format.
- csv: posts.csv, UTF-8 with a byte order mark, RFC 4180, header `id,timestamp,language,body`.
  Spreadsheet formulas are made inert as OWASP recommends: a text cell (language, body) that
  starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`; so that the
  rule can be undone exactly, a cell that itself starts with `'` gets one more `'`.
  read_posts_csv() strips exactly one leading `'` (restore_cell).
- activitystreams: archive.zip as Mastodon's archive lays it out: outbox.json (an ActivityStreams
  2.0 OrderedCollection of Create activities of Notes), actor.json (a Person),
  following_accounts.csv (Mastodon's follow import layout), README.txt; in
  app/exports/activitystreams.py.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from flask import current_app
from flask_babel import lazy_gettext as _l

from app.exports.activitystreams import write_activitystreams
from app.exports.posts import (  # noqa: F401 (count_posts, iter_post_rows: used through here)
    count_posts,
    format_timestamp,
    iter_post_batches,
    iter_post_rows,
    parse_timestamp,
)
from app.models import User, utcnow

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Format:
    """An export format: its name (the Export row's `format`, the form's value), the file's
    name in downloads and mail, its media type, its writer, and how the export centre's form
    offers it (lazy strings: translated when shown). write(user, out, on_progress,
    batch_size) -> posts written, where `out` is a seekable binary file and
    on_progress(posts_written_so_far) is called after each batch (it may raise to stop the
    export: the caller then discards the file)."""

    name: str
    filename: str
    content_type: str
    write: Callable[[User, BinaryIO, Callable[[int], None] | None, int], int]
    label: object
    description: object


def write_json(user: User, out: BinaryIO, on_progress: Callable[[int], None] | None,
               batch_size: int) -> int:
    """posts.json, the seed's format, oldest post first:

    {"format": "microblog-posts", "version": 1, "user": ..., "exported_at": "...Z",
     "posts": [{"id": ..., "body": ..., "timestamp": "...Z", "language": ...}, ...]}
    """
    header = json.dumps({
        "format": "microblog-posts", "version": FORMAT_VERSION, "user": user.username,
        "exported_at": utcnow().isoformat() + "Z"}, ensure_ascii=False)
    # What json.dumps(a_str, ensure_ascii=False) calls, without its per-call overhead.
    encode = json.encoder.encode_basestring
    written = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=False)
    try:
        text.write(header[:-1] + ', "posts": [')
        for rows in iter_post_batches(user, batch_size):
            # One write per batch: the loop runs once per post, so every call counts.
            text.write((",\n" if written else "\n") + ",\n".join([
                f'{{"id": {post_id}, "body": {encode(body)}, '
                f'"timestamp": "{timestamp}", "language": '
                f'{"null" if language is None else encode(language)}}}'
                for post_id, body, timestamp, language in rows]))
            written += len(rows)
            if on_progress is not None:
                on_progress(written)
        text.write("\n]}\n")
        text.flush()
    finally:
        text.detach()  # leave `out` open: its owner closes (and publishes or discards) it
    return written


# --------------------------------------------------------------------------- csv

CSV_HEADER = ("id", "timestamp", "language", "body")
# What makes a spreadsheet run a cell as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_QUOTED_STARTS = (*FORMULA_TRIGGERS, "'")


def neutralise_cell(text: str) -> str:
    """The cell made inert for spreadsheets: a leading `'` before a formula trigger, and
    before a `'` (so that restore_cell can undo it exactly)."""
    return "'" + text if text.startswith(_QUOTED_STARTS) else text


def restore_cell(text: str) -> str:
    """Undo neutralise_cell: strip one leading `'`."""
    return text[1:] if text.startswith("'") else text


def write_csv(user: User, out: BinaryIO, on_progress: Callable[[int], None] | None,
              batch_size: int) -> int:
    """posts.csv: a UTF-8 byte order mark, then RFC 4180 rows ending in CRLF, quoted only
    where needed, oldest post first:

    id,timestamp,language,body
    1,2024-01-01T12:00:00.123456Z,en,"hello, world"
    2,2024-01-01T12:05:00Z,,'=1+1

    The byte order mark is what makes Excel read the file as UTF-8 (without it, Korean and
    emoji come out garbled); Python reads it with encoding="utf-8-sig". An empty language
    is unknown. Text cells go through neutralise_cell."""
    written = 0
    out.write(codecs.BOM_UTF8)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        for rows in iter_post_batches(user, batch_size):
            writer.writerows([
                (post_id, timestamp,
                 "" if language is None else neutralise_cell(language), neutralise_cell(body))
                for post_id, body, timestamp, language in rows])
            written += len(rows)
            if on_progress is not None:
                on_progress(written)
        text.flush()
    finally:
        text.detach()  # leave `out` open: its owner closes (and publishes or discards) it
    return written


def read_posts_csv(stream: BinaryIO) -> Iterator[dict]:
    """The posts of a posts.csv (a binary stream), one dict at a time, as they were before
    the export: {"id": int, "timestamp": datetime (naive UTC), "language": str | None,
    "body": str}. Raises ValueError if the header is not posts.csv's."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if tuple(header or ()) != CSV_HEADER:
            raise ValueError(f"not a posts.csv: header {header!r}")
        for post_id, timestamp, language, body in reader:
            yield {"id": int(post_id), "timestamp": parse_timestamp(timestamp),
                   "language": restore_cell(language) if language else None,
                   "body": restore_cell(body)}
    finally:
        text.detach()


# The export formats, the one list of them: the form offers them in this order.
FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (
    Format("json", "posts.json", "application/json", write_json, _l("JSON"),
           _l("One file with every post, its date and language: for programs and for "
              "importing elsewhere.")),
    Format("csv", "posts.csv", "text/csv; charset=utf-8", write_csv, _l("CSV"),
           _l("A table with one post per row: opens in any spreadsheet.")),
    Format("activitystreams", "archive.zip", "application/zip", write_activitystreams,
           _l("ActivityStreams archive"),
           _l("A zip in the fediverse's format (ActivityPub outbox), for moving to "
              "Mastodon-like services.")),
)}


def write_export(fmt: str, user: User, out: BinaryIO,
                 on_progress: Callable[[int], None] | None = None,
                 batch_size: int | None = None) -> int:
    """Write the user's posts in format `fmt` (a key of FORMATS) to `out`; returns the number
    of posts written."""
    batch_size = batch_size or current_app.config["EXPORT_BATCH_SIZE"]
    return FORMATS[fmt].write(user, out, on_progress, batch_size)
