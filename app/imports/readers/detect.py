"""Which kind of archive a file is, decided from its content alone: never from its name or
the type a browser claims for it (a Mastodon archive saved as posts.csv is still read as a
Mastodon archive).

- A zip (by its first bytes): by the files in it. Our archive.zip has a README.txt naming
  its format ("Format: microblog-activitystreams"); Mastodon's has outbox.json (and
  actor.json); X's has data/tweets.js (data/tweet.js in older ones).
- Not a zip, starting with `{` (after a byte order mark and white space): posts.json, whose
  first key says so ("format": "microblog-posts").
- Starting with the line id,timestamp,language,body: posts.csv.
- Anything else is refused, saying what it looked like (a PDF, an image, plain text ...).
"""

from __future__ import annotations

import codecs
import itertools

import ijson

from app.exports.formats import CSV_HEADER, FORMAT_VERSION
from app.imports.readers.items import (
    LOOKS_LIKE_BINARY,
    LOOKS_LIKE_EMPTY,
    LOOKS_LIKE_GZIP,
    LOOKS_LIKE_HTML,
    LOOKS_LIKE_IMAGE,
    LOOKS_LIKE_OTHER_ARCHIVE,
    LOOKS_LIKE_OTHER_CSV,
    LOOKS_LIKE_OTHER_JSON,
    LOOKS_LIKE_OTHER_ZIP,
    LOOKS_LIKE_OUTBOX,
    LOOKS_LIKE_PDF,
    LOOKS_LIKE_TEXT,
    NEWER_VERSION,
    Archive,
    ArchiveRefused,
    Limits,
)
from app.imports.readers.mastodon import OUTBOX, MastodonArchive
from app.imports.readers.microblog import MicroblogActivityStreams, MicroblogCsv, MicroblogJson
from app.imports.readers.streams import BOM, without_bom
from app.imports.readers.x import XArchive
from app.imports.readers.zips import SafeZip, is_zip

HEAD = 8192  # what is read of a file to tell what it is
README, README_FORMAT = "README.txt", b"Format: microblog-activitystreams"
X_MARKERS = ("data/tweets.js", "data/tweet.js")
# How many JSON events posts.json's header may take before "posts" (it takes a dozen).
HEADER_EVENTS = 1000
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00",
               b"MM\x00*", b"\x00\x00\x01\x00")
OTHER_ARCHIVE_MAGIC = (b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"BZh", b"\xfd7zXZ\x00",
                       b"\x28\xb5\x2f\xfd")


def open_detected(path: str, limits: Limits) -> Archive:
    """The archive in the file at `path`, of the kind its content says. Raises
    ArchiveRefused for a file of no kind we read (saying what it looked like)."""
    with open(path, "rb") as f:
        head = f.read(HEAD)
    if is_zip(head):
        return open_zip(path, limits)
    text = head.removeprefix(BOM).lstrip(b" \t\r\n")
    if text.startswith(b"{"):
        return open_json(path)
    first_line = text.split(b"\n", 1)[0].rstrip(b"\r")
    if first_line == ",".join(CSV_HEADER).encode():
        return MicroblogCsv(path)
    raise ArchiveRefused.not_accepted(looks_like(head))


def open_zip(path: str, limits: Limits) -> Archive:
    archive = SafeZip(path, limits)
    try:
        root = archive.find_root(OUTBOX)
        if root is not None:
            archive.root = root
            if archive.has(README) and README_FORMAT in archive.read_small(
                    README, archive.budget(), HEAD):
                return MicroblogActivityStreams(archive)
            return MastodonArchive(archive)
        for marker in X_MARKERS:
            root = archive.find_root(marker)
            if root is not None:
                archive.root = root
                return XArchive(archive)
        raise ArchiveRefused.not_accepted(LOOKS_LIKE_OTHER_ZIP)
    except BaseException:
        archive.close()
        raise


def open_json(path: str) -> Archive:
    """posts.json, known by its first key. Its header (format, version, user) is read as
    a stream up to "posts", whatever comes after."""
    header: dict[str, object] = {}
    with open(path, "rb") as f:
        events = ijson.parse(without_bom(f), use_float=True)
        try:
            for prefix, event, value in itertools.islice(events, HEADER_EVENTS):
                if prefix == "" and event == "map_key" and value in ("posts", "orderedItems"):
                    header[value] = True
                    break
                if prefix in ("format", "version", "user", "type") and event in (
                        "string", "number"):
                    header[prefix] = value
        except (ijson.JSONError, UnicodeDecodeError):
            pass  # what was read before tells
    if header.get("format") != "microblog-posts":
        outbox = header.get("type") == "OrderedCollection" or "orderedItems" in header
        raise ArchiveRefused.not_accepted(LOOKS_LIKE_OUTBOX if outbox else LOOKS_LIKE_OTHER_JSON)
    version = header.get("version")
    if isinstance(version, int | float) and version > FORMAT_VERSION:
        raise ArchiveRefused(NEWER_VERSION, version=version)
    user = header.get("user")
    return MicroblogJson(path, user if isinstance(user, str) and user else None)


def looks_like(head: bytes) -> str:
    """What a file of no kind we read looks like (a LOOKS_LIKE_* sentence), from its first
    bytes."""
    if not head:
        return LOOKS_LIKE_EMPTY
    if head.startswith(b"%PDF"):
        return LOOKS_LIKE_PDF
    if (head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or head[4:12] in (b"ftypheic", b"ftypavif", b"ftypmif1")):
        return LOOKS_LIKE_IMAGE
    if head.startswith(b"\x1f\x8b"):
        return LOOKS_LIKE_GZIP
    if head.startswith(OTHER_ARCHIVE_MAGIC) or head[257:262] == b"ustar":
        return LOOKS_LIKE_OTHER_ARCHIVE
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head.removeprefix(BOM))
    except UnicodeDecodeError:
        return LOOKS_LIKE_BINARY
    if "\x00" in text:
        return LOOKS_LIKE_BINARY
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return LOOKS_LIKE_HTML
    if start.startswith("<?xml") and "<svg" in start or start.startswith("<svg"):
        return LOOKS_LIKE_IMAGE
    if start.startswith("["):
        return LOOKS_LIKE_OTHER_JSON
    lines = start.splitlines()[:2]
    if len(lines) == 2 and lines[0].count(",") == lines[1].count(",") > 0:
        return LOOKS_LIKE_OTHER_CSV
    return LOOKS_LIKE_TEXT
