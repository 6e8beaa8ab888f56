"""The download of an export file: streamed from storage in chunks (never whole in memory),
with HTTP range requests so that a large download can be resumed, or a redirect to the
object store's presigned URL when storage offers one.

Range requests (RFC 9110 §14): one range is answered 206 with Content-Range; a range that
starts past the end 416 with `Content-Range: bytes */<size>`; several ranges, a malformed
Range header, or an If-Range that does not match the ETag are ignored and the whole file is
sent (200), as the RFC allows (as do other units than bytes).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from flask import Response, abort, current_app, redirect, request

from app.exports.storage import Storage, attachment_disposition
from app.security import slots

DOWNLOADS_KEY = "microblog:downloads:user:"  # + user id: the user's downloads in progress
# A download renews its place this often while it sends; a place not renewed for the lease
# (its process was killed, or its client stopped reading: nginx's send_timeout ends those)
# no longer counts.
DOWNLOAD_RENEWAL = 15
DOWNLOAD_LEASE = 600
RETRY_AFTER = {"Retry-After": str(DOWNLOAD_RENEWAL)}


class TooManyDownloads(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(cap)
        self.cap = cap


def download_response(storage: Storage, key: str, filename: str, content_type: str,
                      etag: str | None = None) -> Response:
    """The response to GET or HEAD of the file under `key`, saved by the browser as
    `filename`. `etag`, when given, must change whenever the file does: it lets a client
    resume with If-Range. Aborts with 404 when there is no file."""
    url = storage.presigned_url(key, filename, content_type)
    if url is not None:
        response = redirect(url, 302)
        response.headers["Cache-Control"] = "private, no-store"
        return response
    try:
        size = storage.size(key)
    except FileNotFoundError:
        abort(404)

    start, end, status = 0, size, 200
    wanted = request.range
    if (wanted is not None and wanted.units == "bytes" and len(wanted.ranges) == 1
            and _if_range_matches(etag)):
        bounds = wanted.range_for_length(size)
        if bounds is None:
            response = Response(status=416)
            response.headers["Content-Range"] = f"bytes */{size}"
            response.headers["Cache-Control"] = "private, no-store"
            return response
        (start, end), status = bounds, 206

    body = () if request.method == "HEAD" else _opened(storage.read(key, start, end))
    response = Response(body, status=status, content_type=content_type,
                        direct_passthrough=True)
    headers = response.headers
    headers["Content-Length"] = str(end - start)
    headers["Content-Disposition"] = attachment_disposition(filename)
    headers["Accept-Ranges"] = "bytes"
    headers["Cache-Control"] = "private, no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if etag is not None:
        response.set_etag(etag)
    return response


def _opened(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks` with its first one read now, so that a file removed since its size was read
    (expired a moment ago) is a 404 rather than a download broken after its headers."""
    try:
        first = next(chunks, b"")
    except FileNotFoundError:
        abort(404)

    def stream() -> Iterator[bytes]:
        try:
            yield first
            yield from chunks
        finally:
            close = getattr(chunks, "close", None)  # a generator's: the file, the store's
            if close is not None:  # connection, also when the client went away
                close()

    return stream()


def _if_range_matches(etag: str | None) -> bool:
    """Whether the Range header applies: no If-Range, or one naming our (strong) ETag. A
    date, or any ETag when we have none, does not match: the client gets the whole file."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    return etag is not None and if_range.strip() == f'"{etag}"'


def counted_download(response: Response, user_id: int) -> Response:
    """`response`, holding one of the user's EXPORT_DOWNLOADS_PER_USER places
    (app/security/slots.py) while this process streams it: like an open /events stream each
    holds a connection, and a slow reader holds it long. A redirect to the object store or a
    HEAD costs none. Raises TooManyDownloads when the user's places are all taken."""
    if not response.direct_passthrough or request.method == "HEAD":
        return response
    cap = current_app.config["EXPORT_DOWNLOADS_PER_USER"]
    try:
        slot = slots.take(current_app.redis, [f"{DOWNLOADS_KEY}{user_id}"], [cap],
                          DOWNLOAD_LEASE, DOWNLOAD_RENEWAL)
    except slots.Full:
        response.close()
        raise TooManyDownloads(cap) from None
    except redis.exceptions.RedisError:  # uncounted, rather than no download at all
        return response
    response.response = slot.renewing(response.response)
    response.call_on_close(slot.release)
    return response
