"""Where export files live, behind one small interface: a folder (LocalStorage, the embedded
default: EXPORT_FOLDER under instance/) or an S3-compatible object store (S3Storage,
EXPORT_STORAGE=s3) shared by web processes and workers on many hosts.

A file is written through `writer(key)` and appears under its key only when the writer's
block ends without an exception: a crashed or cancelled export never leaves a half file that
can be downloaded. Reads stream in chunks (never the whole file in memory).

S3Storage uses boto3: it is the mature reference S3 client, does multipart uploads from a
file in bounded memory and presigns URLs, and speaks to any S3-compatible store (AWS S3,
MinIO, Cloudflare R2, moto's server in the tests) given an endpoint URL.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from flask import current_app
from werkzeug.http import dump_options_header

if TYPE_CHECKING:
    from flask import Flask

CHUNK_SIZE = 256 * 1024
# Files being written: LocalStorage's beside their key, S3Storage's before their upload.
TEMP_SUFFIX = ".part"


class StorageUnavailable(ConnectionError):
    """The object store could not be reached or failed on its side (5xx): worth another try
    later. A ConnectionError, so the job lifecycle retries an export that met it."""

    user_reason = "The export storage could not be reached."


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn the client's network and server-side failures into StorageUnavailable (a missing
    key and other refusals pass through, for the caller to read)."""
    from boto3.exceptions import S3UploadFailedError

    try:
        yield
    except ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500:
            raise StorageUnavailable(str(err)) from err
        raise
    except (BotoCoreError, S3UploadFailedError) as err:
        raise StorageUnavailable(str(err)) from err


class Storage:
    """The interface. Keys are relative paths like "<user id>/<export id>/<task id>/posts.csv"."""

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
        fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=TEMP_SUFFIX, dir=final.parent)
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
        path = self.path(key)
        path.unlink(missing_ok=True)
        if path.parent != self.root.resolve():
            try:  # the export's own folder, once empty (the user's folder stays: see writer)
                path.parent.rmdir()
            except OSError:
                pass

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()




class S3Storage(Storage):
    """Objects in a bucket of an S3-compatible store, under `prefix` + key. Files are written
    to a temporary file in `temp_dir` (the zip writer needs to seek) and uploaded once
    complete; downloads stream from the store, or redirect to it when `presign_seconds` is
    set (EXPORT_S3_PRESIGNED_DOWNLOADS)."""

    def __init__(self, bucket: str, temp_dir: str | os.PathLike, prefix: str = "",
                 endpoint_url: str | None = None, region: str | None = None,
                 presign_seconds: int | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.temp_dir = Path(temp_dir)
        self.endpoint_url = endpoint_url
        self.region = region
        self.presign_seconds = presign_seconds
        self._client = None
        self._client_pid: int | None = None

    @property
    def client(self):
        """A boto3 S3 client, made in this process (a worker's work horse is a fork: it must
        not share its parent's connections)."""
        if self._client is None or self._client_pid != os.getpid():
            from botocore.config import Config

            # Path-style addressing (endpoint/bucket/key) is what MinIO and most other
            # S3-compatible stores expect; AWS itself gets its default.
            addressing = {"addressing_style": "path"} if self.endpoint_url else {}
            self._client = _new_client(
                endpoint_url=self.endpoint_url, region_name=self.region,
                config=Config(signature_version="s3v4", s3=addressing,
                              retries={"mode": "standard"}))
            self._client_pid = os.getpid()
        return self._client

    def object_key(self, key: str) -> str:
        return self.prefix + key

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        from boto3.s3.transfer import TransferConfig

        self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="upload.", suffix=TEMP_SUFFIX, dir=self.temp_dir)
        try:
            with os.fdopen(fd, "w+b") as out:
                yield out
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            # Multipart in 8 MB parts, at most 4 at a time: memory stays bounded whatever
            # the size of the file.
            with _store_errors():
                self.client.upload_file(
                    tmp, self.bucket, self.object_key(key),
                    ExtraArgs={"ContentType": content_type},
                    Config=TransferConfig(multipart_chunksize=8 * 2**20, max_concurrency=4))
        finally:
            os.unlink(tmp)

    def size(self, key: str) -> int:
        return self._head(key)["ContentLength"]

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with _store_errors():
                body = self.client.get_object(**params)["Body"]
        except ClientError as err:
            if _error_code(err) == "InvalidRange":  # start at or past the end: no bytes
                return
            _raise_not_found(err, key)
            raise
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        finally:
            body.close()  # also when the reader stops early (a client went away)

    def delete(self, key: str) -> None:
        with _store_errors():
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def presigned_url(self, key: str, filename: str, content_type: str) -> str | None:
        if not self.presign_seconds:
            return None
        return self.client.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_seconds,
            Params={"Bucket": self.bucket, "Key": self.object_key(key),
                    "ResponseContentDisposition": attachment_disposition(filename),
                    "ResponseContentType": content_type,
                    "ResponseCacheControl": "private, no-store"})

    def _head(self, key: str) -> dict:
        try:
            with _store_errors():
                return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as err:
            _raise_not_found(err, key)
            raise


_boto3_lock = threading.Lock()
_boto3_sessions: dict[int, object] = {}


def _new_client(**options):
    """An S3 client from this process's one boto3 session: a session loads the service
    description once (about a second), and is not safe to share across threads or forks."""
    import boto3  # imported when first used: it takes a while

    with _boto3_lock:
        session = _boto3_sessions.get(os.getpid())
        if session is None:
            _boto3_sessions.clear()
            session = _boto3_sessions[os.getpid()] = boto3.session.Session()
        return session.client("s3", **options)


def _error_code(err: ClientError) -> str | None:
    return err.response.get("Error", {}).get("Code")


def _raise_not_found(err: ClientError, key: str) -> None:
    if _error_code(err) in ("404", "NoSuchKey", "NotFound"):
        raise FileNotFoundError(f"no export file under {key!r}") from err


def attachment_disposition(filename: str) -> str:
    """`Content-Disposition: attachment` for `filename`, safe for any name (RFC 6266): an
    ASCII `filename` for old clients plus `filename*` (RFC 5987) when it is not ASCII."""
    try:
        filename.encode("ascii")
    except UnicodeEncodeError:
        ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
        return dump_options_header("attachment", {
            "filename": ascii_name or "download",
            "filename*": "UTF-8''" + quote(filename, safe="!#$&+^`|~")})
    return dump_options_header("attachment", {"filename": filename})


def get_storage() -> Storage:
    """The app's export storage, built once per app from its settings."""
    storage = current_app.extensions.get("microblog_export_storage")
    if storage is None:
        storage = build_storage(current_app)
        current_app.extensions["microblog_export_storage"] = storage
    return storage


def build_storage(app: Flask) -> Storage:
    """A Storage from the app's EXPORT_STORAGE and EXPORT_S3_* settings."""
    config = app.config
    kind = config["EXPORT_STORAGE"]
    if kind == "local":
        return LocalStorage(config["EXPORT_FOLDER"])
    if kind == "s3":
        if not config.get("EXPORT_S3_BUCKET"):
            raise RuntimeError("EXPORT_STORAGE=s3 needs EXPORT_S3_BUCKET")
        presign = config["EXPORT_S3_PRESIGN_SECONDS"]
        return S3Storage(
            bucket=config["EXPORT_S3_BUCKET"], temp_dir=config["EXPORT_FOLDER"],
            prefix=config.get("EXPORT_S3_PREFIX") or "",
            endpoint_url=config.get("EXPORT_S3_ENDPOINT_URL"),
            region=config.get("EXPORT_S3_REGION"),
            presign_seconds=presign if config.get("EXPORT_S3_PRESIGNED_DOWNLOADS") else None)
    raise RuntimeError(f"EXPORT_STORAGE={kind!r} is not supported (local or s3)")


def cleanup_stale_temp_files(max_age: float, folder: str | os.PathLike | None = None) -> int:
    """Remove files being written (`*.part`) older than `max_age` seconds from EXPORT_FOLDER
    (or `folder`): what a killed worker left behind (its writer never got to remove them).
    `max_age` must exceed the longest export, or a running one loses its file. Returns how
    many were removed."""
    root = Path(folder if folder is not None else current_app.config["EXPORT_FOLDER"])
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age
    removed = 0
    for path in root.rglob("*" + TEMP_SUFFIX):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # its writer finished or removed it meanwhile
            continue
    return removed
