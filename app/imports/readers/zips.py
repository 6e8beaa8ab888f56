"""A zip archive opened with suspicion: it came from anyone.

- At most `Limits.max_members` members (a zip of a million empty files costs a worker time
  and memory just to list).
- No member whose uncompressed size is more than `Limits.max_ratio` times its compressed size
  (a zip bomb: a few kilobytes that unpack to gigabytes).
- The bytes actually unpacked are counted while they are read, across all the members one
  reading pass opens, and the reading stops past `Limits.max_uncompressed`: the sizes in the
  zip's directory are the uploader's word, and may lie.
- Member names only find members inside the zip. Nothing is ever extracted, so a name such
  as "../../etc/passwd" or "/tmp/x" is never a path on this machine; names with such parts
  are simply never the members we look for.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from typing import BinaryIO

from app.imports.readers.items import (
    DAMAGED_ZIP,
    ENCRYPTED_ZIP,
    TOO_LARGE_UNPACKED,
    TOO_MANY_MEMBERS,
    UNSUPPORTED_COMPRESSION,
    ZIP_BOMB,
    ArchiveRefused,
    Limits,
)

# Errors reading a zip member's data: its compressed bytes are damaged, or it is cut short.
DAMAGED_DATA = (zipfile.BadZipFile, zlib.error, EOFError)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# A member this small cannot be a bomb whatever its ratio (a page of spaces deflates 500:1).
RATIO_FLOOR = 1024 * 1024


class ReadBudget:
    """The uncompressed bytes one reading pass may still unpack, shared by the members it
    opens."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise ArchiveRefused(TOO_LARGE_UNPACKED, limit=f"{self.limit:,}")


class CountedMember(io.BufferedIOBase):
    """A member's data as a binary stream, its bytes counted against a ReadBudget."""

    def __init__(self, stream: BinaryIO, budget: ReadBudget) -> None:
        super().__init__()
        self.stream = stream
        self.budget = budget

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Raises ArchiveRefused (DAMAGED_ZIP) when the data is damaged (a bad checksum, a
        broken deflate stream, cut short), or past the budget."""
        try:
            data = self.stream.read(-1 if size is None else size)
        except (*DAMAGED_DATA, OSError) as exc:
            raise ArchiveRefused(DAMAGED_ZIP) from exc
        self.budget.spend(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def close(self) -> None:
        self.stream.close()
        super().close()


class SafeZip:
    """A zip archive held to `limits`. Raises ArchiveRefused when the file is not a readable
    zip, has too many members, or holds a zip bomb."""

    def __init__(self, path: str, limits: Limits) -> None:
        self.limits = limits
        self.check_directory(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except NotImplementedError as exc:  # a zip of a version zipfile does not read
            raise ArchiveRefused(UNSUPPORTED_COMPRESSION) from exc
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ArchiveRefused(DAMAGED_ZIP) from exc
        try:
            self.check(self.zip.infolist())
        except BaseException:
            self.zip.close()
            raise
        self.names = {info.filename for info in self.zip.infolist()}
        # The folder the archive's files are in: "" (the zip's top), or the one folder a
        # re-zipped archive puts them in ("archive-20240101/"). See find_root.
        self.root = ""

    def check_directory(self, path: str) -> None:
        """Refuse a zip whose directory lists too many members before zipfile reads it: it
        makes an object of every entry, and a 100 MB zip of empty files has a million. The
        count in the end record may lie (zipfile reads the directory by its size), so the
        directory's size is held to DIRECTORY_BYTES_PER_MEMBER a member too."""
        found = directory_of(path)
        if found is None:
            return  # not a zip zipfile reads either: it says so
        entries, size = found
        if (entries > self.limits.max_members
                or size > self.limits.max_members * DIRECTORY_BYTES_PER_MEMBER):
            # A count that lies is replaced by what the directory's size implies at least.
            count = (entries if entries > self.limits.max_members
                     else size // DIRECTORY_BYTES_PER_MEMBER)
            raise ArchiveRefused(TOO_MANY_MEMBERS, count=f"{count:,}",
                                 limit=f"{self.limits.max_members:,}")

    def check(self, members: list[zipfile.ZipInfo]) -> None:
        if len(members) > self.limits.max_members:
            raise ArchiveRefused(TOO_MANY_MEMBERS, count=f"{len(members):,}",
                                 limit=f"{self.limits.max_members:,}")
        for info in members:
            if (info.file_size > RATIO_FLOOR
                    and info.file_size > self.limits.max_ratio * max(info.compress_size, 1)):
                raise ArchiveRefused(ZIP_BOMB, member=safe_name(info.filename),
                                     ratio=self.limits.max_ratio)

    def budget(self) -> ReadBudget:
        """A new reading pass's budget of unpacked bytes."""
        return ReadBudget(self.limits.max_uncompressed)

    def find_root(self, marker: str) -> str | None:
        """Where the archive whose file `marker` is ("outbox.json") lies in the zip: at its
        top (""), or in one folder ("archive/"), as when someone unpacks an archive and
        zips its folder again; None when it is not there. A folder named "..", or a name
        starting with "/", is never one (though nothing is ever extracted)."""
        if marker in self.names:
            return ""
        depth = marker.count("/") + 1
        folders = sorted(name[:-len(marker)] for name in self.names
                         if name.endswith("/" + marker) and name.count("/") == depth)
        for folder in folders:
            if folder not in ("/", "./", "../") and not folder.startswith(("/", "__MACOSX")):
                return folder
        return None

    def names_under_root(self) -> set[str]:
        return {name[len(self.root):] for name in self.names if name.startswith(self.root)}

    def has(self, name: str) -> bool:
        """Whether the archive has the file `name` (in its root folder)."""
        return self.root + name in self.names

    def open(self, name: str, budget: ReadBudget) -> CountedMember:
        """The member called `name` (exactly: a name, never a path), read as a counted
        stream. Raises ArchiveRefused if it is encrypted, compressed in a way we do not
        read, or damaged."""
        info = self.zip.getinfo(self.root + name)
        if info.flag_bits & 0x1:
            raise ArchiveRefused(ENCRYPTED_ZIP)
        if info.file_size > self.limits.max_uncompressed:
            raise ArchiveRefused(TOO_LARGE_UNPACKED, limit=f"{self.limits.max_uncompressed:,}")
        try:
            return CountedMember(self.zip.open(info), budget)
        except NotImplementedError as exc:
            raise ArchiveRefused(UNSUPPORTED_COMPRESSION) from exc
        # RuntimeError: zipfile's "File ... is encrypted" for a flag the directory hid;
        # OSError: a member's header offset past the file's end.
        except (RuntimeError, OSError, *DAMAGED_DATA) as exc:
            raise ArchiveRefused(DAMAGED_ZIP) from exc

    def read_small(self, name: str, budget: ReadBudget, limit: int = 1024 * 1024) -> bytes:
        """The first `limit` bytes of a small member (README.txt, actor.json, account.js)."""
        member = self.open(name, budget)
        try:
            return member.read(limit)
        finally:
            member.close()

    def close(self) -> None:
        self.zip.close()


# An entry of a zip's directory is 46 bytes and its name and extra fields: a long media
# path, ZIP64 sizes and timestamps come to about 200.
DIRECTORY_BYTES_PER_MEMBER = 512
END_RECORD = struct.Struct("<4s4H2LH")  # signature, disks, entries (disk, total), size, ...
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")


def directory_of(path: str) -> tuple[int, int] | None:
    """(entries, size in bytes) of a zip's central directory, as its end record says, or
    None when there is no end record to read."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        length = f.tell()
        tail_start = max(0, length - END_RECORD.size - 0xFFFF)  # the record, then a comment
        f.seek(tail_start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < END_RECORD.size:
            return None
        _, _, _, _, entries, size, _, _ = END_RECORD.unpack_from(tail, at)
        locator_at = at - ZIP64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at:locator_at + 4] == b"PK\x06\x07":
            _, _, record_offset, _ = ZIP64_LOCATOR.unpack_from(tail, locator_at)
            if record_offset >= length:
                return None
            f.seek(record_offset)
            record = f.read(ZIP64_END_RECORD.size)
            if len(record) == ZIP64_END_RECORD.size and record[:4] == b"PK\x06\x06":
                fields = ZIP64_END_RECORD.unpack(record)
                entries, size = fields[7], fields[8]
    return entries, size


def safe_name(name: str) -> str:
    """A member's name as a message may quote it: one word, printable, not too long."""
    word = "".join(c if c.isprintable() and not c.isspace() else "?" for c in name)
    return word[:80] or "?"


def is_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)
