"""Our own exports (app/exports/formats.py, docs/exports.md), read back: posts.json,
posts.csv and the ActivityStreams archive.zip. Their posts are kept exactly as they were
exported (body byte for byte, language as written), their time to the second."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from app.exports.formats import CSV_HEADER, restore_cell
from app.imports.readers.items import (
    MISSING_FIELD,
    NOT_A_DATE,
    NOT_AN_OBJECT,
    NOT_TEXT,
    NOT_UTF8,
    WRONG_CELLS,
    Archive,
    ArchivePost,
    ArchiveRefused,
    BrokenItem,
    Item,
    SkippedItem,
)
from app.imports.readers.mastodon import OutboxArchive
from app.imports.readers.streams import broken_at, json_items, parse_time, without_bom
from app.models import PostOrigin

# A post kept whole may be far longer than the csv module's default cell (128 KiB).
CSV_FIELD_LIMIT = 256 * 1024 * 1024


def own_language(value: object) -> str | None:
    """A language as our exports write it (a post's column: up to 5 characters), or None."""
    return value if isinstance(value, str) and 0 < len(value) <= 5 else None


def own_id(value: object) -> str | None:
    return str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None


class MicroblogJson(Archive):
    """posts.json: {"format": "microblog-posts", "version": 1, "user": ..., "posts": [{"id",
    "body", "timestamp", "language"}, ...]}, read a post at a time."""

    kind = "microblog-json"
    origin = PostOrigin.MICROBLOG

    def __init__(self, path: str, account: str | None) -> None:
        self.path = path
        self.account = account

    def items(self) -> Iterator[Item]:
        with open(self.path, "rb") as f:
            for number, value in json_items(without_bom(f), "posts.item"):
                yield self.item(number, value)

    @staticmethod
    def item(number: int, value: object) -> Item:
        if not isinstance(value, dict):
            return BrokenItem(number, NOT_AN_OBJECT, None)
        original_id = own_id(value.get("id"))
        for field in ("body", "timestamp"):
            if value.get(field) is None:
                return BrokenItem(number, MISSING_FIELD % {"field": field}, original_id)
        body = value["body"]
        if not isinstance(body, str):
            return BrokenItem(number, NOT_TEXT % {"field": "body"}, original_id)
        timestamp = parse_time(value["timestamp"])
        if timestamp is None:
            return BrokenItem(number, NOT_A_DATE % {"field": "timestamp"}, original_id)
        if not body.strip():
            return SkippedItem(number, "empty", original_id)
        return ArchivePost(number, body, timestamp, own_language(value.get("language")),
                           original_id)


class MicroblogCsv(Archive):
    """posts.csv: a byte order mark, the header id,timestamp,language,body, then a post a row
    with its text cells made inert for spreadsheets (undone here: restore_cell)."""

    kind = "microblog-csv"
    origin = PostOrigin.MICROBLOG

    def __init__(self, path: str) -> None:
        self.path = path

    def items(self) -> Iterator[Item]:
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        with open(self.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            number = 0
            try:
                next(reader, None)  # the header: detection checked it
                for row in reader:
                    if not row:  # a blank line
                        continue
                    number += 1
                    yield self.item(number, row)
            except UnicodeDecodeError as exc:
                raise ArchiveRefused(NOT_UTF8, item=f"{number + 1:,}") from exc
            except csv.Error as exc:
                raise broken_at(number + 1, None) from exc

    @staticmethod
    def item(number: int, row: list[str]) -> Item:
        if len(row) != len(CSV_HEADER):
            return BrokenItem(number, WRONG_CELLS % {"count": len(row)}, None)
        post_id, stamp, language, body = row
        original_id = post_id or None
        timestamp = parse_time(stamp)
        if timestamp is None:
            return BrokenItem(number, NOT_A_DATE % {"field": "timestamp"}, original_id)
        body = restore_cell(body)
        if not body.strip():
            return SkippedItem(number, "empty", original_id)
        return ArchivePost(number, body, timestamp,
                           own_language(restore_cell(language)) if language else None,
                           original_id)


class MicroblogActivityStreams(OutboxArchive):
    """Our archive.zip: laid out as Mastodon's archive, each Note's source.content the post
    exactly as written."""

    kind = "microblog-activitystreams"
    origin = PostOrigin.MICROBLOG

    @staticmethod
    def language(note: dict) -> str | None:
        languages = note.get("contentMap")
        if isinstance(languages, dict) and languages:
            return own_language(next(iter(languages)).replace("-", "_"))
        return None
