"""Where export files live, behind one small interface: a folder (LocalStorage, the embedded
default: EXPORT_FOLDER under instance/) or an S3-compatible object store (EXPORT_STORAGE=s3)
shared by web processes and workers on many hosts.

A file is written through `writer(key)` and appears under its key only when the writer's
block ends without an exception: a crashed or cancelled export never leaves a half file that
can be downloaded. Reads stream in chunks (never the whole file in memory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from flask import current_app

CHUNK_SIZE = 256 * 1024


class Storage:
    """The interface. Keys are relative paths like "<user id>/<export id>/posts.csv"."""

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """A seekable binary file to write; published under `key` when the block exits
        normally, discarded (nothing under `key`) when it raises."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        """Bytes in the file; FileNotFoundError when there is none."""
        raise NotImplementedError

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of the file (to its end when `end` is None), in chunks."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the file; no error when it is already gone."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def presigned_url(self, key: str, filename: str, content_type: str) -> str | None:
        """A short-lived URL a browser can download the file from directly, or None when
        downloads must go through the web process."""
        return None


class LocalStorage(Storage):
    """Files in a folder: one machine, or several sharing the folder (a volume, NFS)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key outside the folder: {key!r}")
        return path

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=".part", dir=final.parent)
        try:
            with os.fdopen(fd, "w+b") as out:
                yield out
            os.replace(tmp, final)
        except BaseException:
            os.unlink(tmp)
            raise

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with open(self.path(key), "rb") as f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = f.read(CHUNK_SIZE if left is None else min(CHUNK_SIZE, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


def get_storage() -> Storage:
    """The app's export storage, built once per app from its settings."""
    storage = current_app.extensions.get("microblog_export_storage")
    if storage is None:
        kind = current_app.config["EXPORT_STORAGE"]
        if kind == "local":
            storage = LocalStorage(current_app.config["EXPORT_FOLDER"])
        else:
            raise RuntimeError(f"EXPORT_STORAGE={kind!r} is not supported")
        current_app.extensions["microblog_export_storage"] = storage
    return storage
