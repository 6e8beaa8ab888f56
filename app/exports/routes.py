"""The export centre's pages: /exports, download, cancel, retry, delete."""

from app.exports import bp  # noqa: F401
