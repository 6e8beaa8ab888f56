"""What every reader needs: JSON read as a stream of items (a syntax error, or a zip member's
damaged data, named by the item it broke at), and an item's time and language as a post keeps
them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

import ijson

from app.imports.readers.items import BROKEN_AT, DAMAGED_ZIP, MEMBER_BROKEN_AT, ArchiveRefused


def broken_at(item: int, member: str | None) -> ArchiveRefused:
    """The refusal of a file (or a zip's member) that breaks off or is malformed at `item`."""
    if member is None:
        return ArchiveRefused(BROKEN_AT, item=f"{item:,}")
    return ArchiveRefused(MEMBER_BROKEN_AT, member=member, item=f"{item:,}")


def json_items(stream: BinaryIO, prefix: str, member: str | None = None,
               first: int = 1) -> Iterator[tuple[int, object]]:
    """(number, value) of each value of the JSON array at `prefix` (ijson's: "posts.item"),
    numbered from `first`, read as a stream: one value in memory at a time. A syntax error
    (or a zip member whose data is damaged) raises ArchiveRefused naming the item it broke
    at, after the items before it."""
    number = first - 1
    try:
        for value in ijson.items(stream, prefix, use_float=True):
            number += 1
            yield number, value
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        raise broken_at(number + 1, member) from exc
    except ArchiveRefused as exc:
        if exc.template != DAMAGED_ZIP:  # a limit: said as it is
            raise
        raise broken_at(number + 1, member) from exc


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time ("2024-01-01T12:00:00Z", an offset, fractions of a second; a time
    without an offset is UTC) as a post keeps it: naive UTC, to the second. None when it is
    not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


# A language tag a post's column (5 characters) holds: "en", "ast", "pt_BR".
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Za-z0-9]{2,4})?")


def language_of(value: object, max_length: int = 5) -> str | None:
    """A language tag as posts keep it ("pt-BR" -> "pt_BR"), or None for none, "und" or a
    tag that does not fit."""
    if not isinstance(value, str):
        return None
    tag = value.strip().replace("-", "_")
    if tag in ("", "und") or len(tag) > max_length or not _LANGUAGE.fullmatch(tag):
        return None
    return tag


class HeadedStream:
    """A binary stream whose first bytes were already read: `head` (what of them is still to
    be read), then the rest of `stream`. How a byte order mark or tweets.js's
    `window.YTD.tweets.part0 = ` is stepped over without reading the file whole."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head = head
        self.stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        if size is None or size < 0:
            data, self.head = self.head + self.stream.read(), b""
        elif len(self.head) >= size:
            data, self.head = self.head[:size], self.head[size:]
        else:
            data, self.head = self.head + self.stream.read(size - len(self.head)), b""
        return data


BOM = b"\xef\xbb\xbf"


def without_bom(stream: BinaryIO) -> HeadedStream:
    """The stream past a UTF-8 byte order mark, if it starts with one."""
    head = stream.read(len(BOM))
    return HeadedStream(b"" if head == BOM else head, stream)
