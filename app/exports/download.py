"""PLACEHOLDER for the pages branch's tests: the storage helper writes the real one (Range,
presigned redirects). Same signature; raises FileNotFoundError when there is no file."""

from __future__ import annotations

from flask import Response
from werkzeug.http import dump_options_header

from app.exports.storage import Storage


def download_response(storage: Storage, key: str, filename: str, content_type: str) -> Response:
    size = storage.size(key)  # FileNotFoundError before any byte is sent
    response = Response(storage.read(key), content_type=content_type, direct_passthrough=True)
    response.content_length = size
    response.headers["Content-Disposition"] = dump_options_header(
        "attachment", {"filename": filename})
    response.headers["Cache-Control"] = "private, no-store"
    return response
