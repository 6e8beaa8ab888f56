"""Reading an archive someone brings here: which kind it is, decided from its content (never
from the file's name or the type the browser claims), and its items, read as a stream so that
memory stays flat whatever the archive's size.

Every reader yields, in the archive's order, one of three things per item (a post of the
archive): an ArchivePost to import, a SkippedItem (a boost, a reply to someone else, ...:
counted by reason, never imported) or a BrokenItem (malformed: it fails alone, with where it
broke, and the import goes on). Items are numbered from 1 in the archive's order; a retried
import skips the items it already dealt with by that number, so a reader must yield the
same items in the same order every time.

A file that is not an archive of a kind we read, or that breaks the limits (Limits: zip
members, uncompressed size, compression ratio), raises ArchiveRefused with a message that
says what the file looked like and which kinds are accepted. A zip member's name is only ever
used to find the member inside the zip, never as a path on disk.

The kinds (KINDS): microblog-json (posts.json), microblog-csv (posts.csv),
microblog-activitystreams (our archive.zip), mastodon (a Mastodon archive: outbox.json),
x (an X/Twitter archive: data/tweets.js).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

KINDS = ("microblog-json", "microblog-csv", "microblog-activitystreams", "mastodon", "x")

# Why an item is skipped, in English (recorded; translated when shown). The importer adds
# "duplicate" (already on the account).
SKIP_REASONS = {
    "boost": "boosts and retweets",
    "reply": "replies to other people's posts",
    "direct": "direct messages",
    "private": "followers-only posts",
    "empty": "empty posts",
}


@dataclass(frozen=True)
class Limits:
    """What a zip archive may hold: members, total uncompressed bytes, and the compression
    ratio (uncompressed / compressed) of any member, past which it is taken for a zip bomb."""

    max_members: int = 10_000
    max_uncompressed: int = 4 * 1024**3
    max_ratio: int = 200

    @classmethod
    def from_config(cls, config: dict) -> Limits:
        return cls(max_members=config["IMPORT_MAX_MEMBERS"],
                   max_uncompressed=config["IMPORT_MAX_UNCOMPRESSED"],
                   max_ratio=config["IMPORT_MAX_RATIO"])


@dataclass(frozen=True)
class ArchivePost:
    """A post to import: its text as its author wrote it (plain text, never markup), its
    original time (naive UTC, to the second), language (or None) and id or URL where it was
    first written (or None)."""

    item: int
    body: str
    timestamp: datetime
    language: str | None
    original_id: str | None


@dataclass(frozen=True)
class SkippedItem:
    item: int
    reason: str  # a key of SKIP_REASONS
    original_id: str | None


@dataclass(frozen=True)
class BrokenItem:
    item: int
    reason: str  # in English, what broke: "no `published`"
    original_id: str | None


Item = ArchivePost | SkippedItem | BrokenItem


class ArchiveRefused(Exception):
    """The file is not an archive we read, or breaks a limit: str(exc) says what it looked
    like and what is accepted (in English: recorded on the task, translated when shown)."""


class Archive:
    """An open archive of one kind. Use as a context manager; `items()` may be called more
    than once (the preview reads it, then the import), each time from the start."""

    kind: str = ""
    origin: str = ""  # app.models.PostOrigin
    # The account the archive belongs to, as the archive names it (for the "this is an
    # archive of @someone, not of you" warning), or None when it does not say.
    account: str | None = None

    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def following(self) -> Iterator[tuple[int, str]]:
        """(line, account address) of each account the archive's owner follows
        (following_accounts.csv: ours and Mastodon's); nothing for the other kinds."""
        return iter(())

    def close(self) -> None:
        pass

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_archive(path: str, limits: Limits = Limits()) -> Archive:
    """The archive in the file at `path` (a local file: a worker downloads one from S3
    first), its kind read from its content. Raises ArchiveRefused."""
    from app.imports.readers.detect import open_detected

    return open_detected(path, limits)
