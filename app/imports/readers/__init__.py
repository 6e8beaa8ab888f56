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
says what the file looked like and which kinds are accepted. A JSON file that breaks off in
the middle yields the items before the break, then raises ArchiveRefused naming the item it
broke at. A zip member's name is only ever used to find the member inside the zip, never as
a path on disk.

The kinds (KINDS): microblog-json (posts.json), microblog-csv (posts.csv),
microblog-activitystreams (our archive.zip), mastodon (a Mastodon archive: outbox.json),
x (an X/Twitter archive: data/tweets.js).

The modules: items.py (what a reader yields and raises, and every message), detect.py (the
kind), microblog.py, mastodon.py, x.py (one reader per kind; our archive.zip shares
Mastodon's layout), zips.py (a zip held to the limits), streams.py (JSON as a stream, times,
languages).
"""

from __future__ import annotations

from app.imports.readers.detect import open_detected
from app.imports.readers.items import (
    BROKEN_REASONS,
    KINDS,
    REFUSALS,
    SKIP_REASONS,
    Archive,
    ArchivePost,
    ArchiveRefused,
    BrokenItem,
    Item,
    Limits,
    SkippedItem,
)

__all__ = ["BROKEN_REASONS", "KINDS", "REFUSALS", "SKIP_REASONS", "Archive", "ArchivePost",
           "ArchiveRefused", "BrokenItem", "Item", "Limits", "SkippedItem", "open_archive"]


DEFAULT_LIMITS = Limits()


def open_archive(path: str, limits: Limits = DEFAULT_LIMITS) -> Archive:
    """The archive in the file at `path` (a local file: a worker downloads one from S3
    first), its kind read from its content. Raises ArchiveRefused."""
    return open_detected(path, limits)
