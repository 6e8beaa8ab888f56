"""What a reader yields and raises: the items of an archive (ArchivePost, SkippedItem,
BrokenItem), the Archive they come from, ArchiveRefused, and the Limits a zip is held to.

Every English sentence a user may read (a refusal, a broken item's reason) is one of the
N_()-marked messages here: recorded in English as it is, with its parameters filled in, and
translated when shown (the way app/jobs/failures.py treats a task's reason: each parameter one
word, so that the English text can be matched back to its message).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

KINDS = ("microblog-json", "microblog-csv", "microblog-activitystreams", "mastodon", "x")


def N_(message: str) -> str:
    """Mark a message for translation (N_ is one of babel's keywords) and return it as it is:
    it is recorded in English, and translated when shown."""
    return message


# Why an item is skipped, in English (recorded; translated when shown). The importer adds
# "duplicate" (already on the account).
SKIP_REASONS = {
    "boost": N_("boosts and retweets"),
    "reply": N_("replies to other people's posts"),
    "direct": N_("direct messages"),
    "private": N_("followers-only posts"),
    "empty": N_("empty posts"),
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
    reason: str  # in English, what broke: "no `published`" (one of BROKEN_REASONS)
    original_id: str | None


Item = ArchivePost | SkippedItem | BrokenItem

# What can be wrong with one item (BrokenItem.reason).
NOT_AN_OBJECT = N_("not a JSON object")
MISSING_FIELD = N_("no `%(field)s`")
NOT_TEXT = N_("`%(field)s` is not text")
NOT_A_DATE = N_("`%(field)s` is not a date")
NOT_A_POST = N_("an activity of type %(type)s, neither a post nor a boost")
OBJECT_NOT_A_NOTE = N_("its `object` is not a post")
WRONG_CELLS = N_("%(count)s cells instead of 4")
BROKEN_REASONS = (NOT_AN_OBJECT, MISSING_FIELD, NOT_TEXT, NOT_A_DATE, NOT_A_POST,
                  OBJECT_NOT_A_NOTE, WRONG_CELLS)


class ArchiveRefused(Exception):
    """The file is not an archive we read, or breaks a limit: str(exc) says what it looked
    like and what is accepted (in English: recorded on the task, translated when shown).

    `template` is the message (one of REFUSALS) and `params` its parameters, each one word
    but `reason` (itself one of REFUSALS): str(exc) == template % params."""

    def __init__(self, template: str, **params: object) -> None:
        self.template = template
        self.params = {name: str(value) for name, value in params.items()}
        super().__init__(template % self.params if self.params else template)

    @classmethod
    def not_accepted(cls, looks_like: str) -> ArchiveRefused:
        """A file of no kind we read: what it looked like (a LOOKS_LIKE_* sentence), then the
        kinds accepted."""
        return cls(NOT_ACCEPTED, reason=looks_like)


# A file that is not an archive we read: what it looked like (one of LOOKS_LIKE_*, the
# reason: translated in its turn), then what is accepted.
NOT_ACCEPTED = N_("%(reason)s Upload a Microblog export (posts.json, posts.csv or "
                  "archive.zip), a Mastodon archive (a zip with outbox.json) or an X (Twitter) "
                  "archive (a zip with data/tweets.js).")
LOOKS_LIKE_PDF = N_("This file looks like a PDF document, not an archive.")
LOOKS_LIKE_IMAGE = N_("This file looks like an image, not an archive.")
LOOKS_LIKE_GZIP = N_("This file looks like a gzip-compressed file (.gz or .tar.gz), not a zip "
                     "archive: older Mastodon archives are .tar.gz; unpack it and upload its "
                     "files as a zip.")
LOOKS_LIKE_OTHER_ARCHIVE = N_("This file looks like a compressed archive of a kind other "
                              "than zip.")
LOOKS_LIKE_BINARY = N_("This file looks like binary data, not an archive.")
LOOKS_LIKE_TEXT = N_("This file looks like plain text, not an archive.")
LOOKS_LIKE_HTML = N_("This file looks like a web page (HTML), not an archive.")
LOOKS_LIKE_EMPTY = N_("This file is empty.")
LOOKS_LIKE_OTHER_CSV = N_("This file looks like a CSV table, but not a Microblog posts.csv "
                          "(its first line is not id,timestamp,language,body).")
LOOKS_LIKE_OTHER_JSON = N_("This file is JSON, but not a Microblog export (posts.json starts "
                           "with \"format\": \"microblog-posts\").")
LOOKS_LIKE_OUTBOX = N_("This file looks like a Mastodon outbox.json on its own: upload the "
                       "whole archive (the zip).")
LOOKS_LIKE_OTHER_ZIP = N_("This file is a zip archive without outbox.json or data/tweets.js.")
NEWER_VERSION = N_("This file is a Microblog export of a newer version (%(version)s) than "
                   "this site reads.")
# The file is of a kind we read, but cannot be read through.
DAMAGED_ZIP = N_("This file looks like a zip archive, but it is damaged or truncated.")
ENCRYPTED_ZIP = N_("This zip archive is encrypted (password-protected).")
UNSUPPORTED_COMPRESSION = N_("This zip archive uses a compression method this site does not "
                             "read.")
TOO_MANY_MEMBERS = N_("This zip archive holds %(count)s files, more than the %(limit)s allowed.")
ZIP_BOMB = N_("This zip archive's %(member)s unpacks to more than %(ratio)s times its "
              "compressed size: it looks like a zip bomb.")
TOO_LARGE_UNPACKED = N_("This zip archive unpacks to more than %(limit)s bytes, the limit.")
# Where a file (or a zip's member) broke: the items before it were yielded.
BROKEN_AT = N_("The file breaks off or is malformed at item %(item)s (the items before it "
               "were read).")
MEMBER_BROKEN_AT = N_("%(member)s breaks off or is malformed at item %(item)s (the items "
                      "before it were read).")
NOT_UTF8 = N_("The file is not UTF-8 text (at item %(item)s).")
BAD_PREFIX = N_("%(member)s does not start as an X archive's file does (window.YTD....).")
REFUSALS = (NOT_ACCEPTED, LOOKS_LIKE_PDF, LOOKS_LIKE_IMAGE, LOOKS_LIKE_GZIP,
            LOOKS_LIKE_OTHER_ARCHIVE, LOOKS_LIKE_BINARY, LOOKS_LIKE_TEXT, LOOKS_LIKE_HTML,
            LOOKS_LIKE_EMPTY, LOOKS_LIKE_OTHER_CSV, LOOKS_LIKE_OTHER_JSON, LOOKS_LIKE_OUTBOX,
            LOOKS_LIKE_OTHER_ZIP, NEWER_VERSION, DAMAGED_ZIP, ENCRYPTED_ZIP,
            UNSUPPORTED_COMPRESSION, TOO_MANY_MEMBERS, ZIP_BOMB, TOO_LARGE_UNPACKED,
            BROKEN_AT, MEMBER_BROKEN_AT, NOT_UTF8, BAD_PREFIX)


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
        (following_accounts.csv: ours and Mastodon's; line 1 is its header); nothing for the
        other kinds. Raises ArchiveRefused if the file is damaged."""
        return iter(())

    def close(self) -> None:
        pass

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
