"""Building an export of a user's posts, one writer per format. Knows nothing about RQ: it
streams rows from the database in batches into a file and reports how many posts it wrote."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from flask import current_app

from app import db
from app.models import Post, User, utcnow

FORMAT_VERSION = 1


def count_posts(user: User) -> int:
    return db.session.scalar(
        sa.select(sa.func.count(Post.id)).where(Post.user_id == user.id)) or 0


def iter_post_batches(user: User, batch_size: int):
    """Yield lists of (id, body, timestamp, language) for the user's posts, oldest first,
    `batch_size` rows at a time (keyset pagination: constant memory, no long cursor)."""
    last_ts, last_id = None, None
    user_id = user.id
    columns = (Post.id, Post.body, Post.timestamp, Post.language)
    while True:
        query = sa.select(*columns).where(Post.user_id == user_id)
        if last_id is not None:
            # "(timestamp, id) after the last row", spelled so that the leading
            # `timestamp >= last_ts` is a range on ix_post_user_timestamp: with only the
            # OR form, SQLite scans the user's posts from the first one for every batch.
            query = query.where(
                Post.timestamp >= last_ts,
                sa.or_(Post.timestamp > last_ts, Post.id > last_id))
        query = query.order_by(Post.timestamp, Post.id).limit(batch_size)
        # Core execution on the session's connection (asked for each batch: the progress
        # callback commits, which releases it): plain rows, without the ORM's per-row
        # loading machinery, which took a third of the time of a million-post export.
        rows = db.session.connection().execute(query).all()
        if not rows:
            return
        yield rows
        last_id, _, last_ts, _ = rows[-1]
        if len(rows) < batch_size:
            return


def iter_post_rows(user: User, batch_size: int):
    """Yield (id, body, timestamp, language) for the user's posts, oldest first."""
    for rows in iter_post_batches(user, batch_size):
        yield from rows


def export_dir() -> Path:
    path = Path(current_app.config["EXPORT_FOLDER"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Format:
    """An export format: the file's name in downloads and mail, its media type, and its
    writer: write(user, out, on_progress, batch_size) -> posts written, where `out` is a
    seekable binary file and on_progress(posts_written_so_far) is called after each batch
    (it may raise to stop the export: the caller then discards the file)."""

    name: str
    filename: str
    content_type: str
    write: Callable[[User, BinaryIO, Callable[[int], None] | None, int], int]


def write_json(user: User, out: BinaryIO, on_progress: Callable[[int], None] | None,
               batch_size: int) -> int:
    """posts.json, the seed's format, oldest post first:

    {"format": "microblog-posts", "version": 1, "user": ..., "exported_at": "...Z",
     "posts": [{"id": ..., "body": ..., "timestamp": "...Z", "language": ...}, ...]}
    """
    header = json.dumps({
        "format": "microblog-posts", "version": FORMAT_VERSION, "user": user.username,
        "exported_at": utcnow().isoformat() + "Z"}, ensure_ascii=False)
    # What json.dumps(a_str, ensure_ascii=False) calls, without its per-call overhead.
    encode = json.encoder.encode_basestring
    written = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=False)
    try:
        text.write(header[:-1] + ', "posts": [')
        for rows in iter_post_batches(user, batch_size):
            # One write per batch: the loop runs once per post, so every call counts.
            text.write((",\n" if written else "\n") + ",\n".join([
                f'{{"id": {post_id}, "body": {encode(body)}, '
                f'"timestamp": "{timestamp.isoformat()}Z", "language": '
                f'{"null" if language is None else encode(language)}}}'
                for post_id, body, timestamp, language in rows]))
            written += len(rows)
            if on_progress is not None:
                on_progress(written)
        text.write("\n]}\n")
        text.flush()
    finally:
        text.detach()  # leave `out` open: its owner closes (and publishes or discards) it
    return written


def _not_yet(user, out, on_progress, batch_size) -> int:
    raise NotImplementedError("this format is being written")


FORMATS: dict[str, Format] = {
    "json": Format("json", "posts.json", "application/json", write_json),
    "csv": Format("csv", "posts.csv", "text/csv; charset=utf-8", _not_yet),
    "activitystreams": Format("activitystreams", "archive.zip", "application/zip", _not_yet),
}


def write_export(fmt: str, user: User, out: BinaryIO,
                 on_progress: Callable[[int], None] | None = None,
                 batch_size: int | None = None) -> int:
    """Write the user's posts in format `fmt` (a key of FORMATS) to `out`; returns the number
    of posts written."""
    batch_size = batch_size or current_app.config["EXPORT_BATCH_SIZE"]
    return FORMATS[fmt].write(user, out, on_progress, batch_size)


def write_posts_json(user: User, on_progress: Callable[[int], None] | None = None,
                     batch_size: int | None = None) -> Path:
    """Write the user's posts as posts.json (write_json) to a new file in EXPORT_FOLDER and
    return its path (the tutorial's export, attached to its mail). Calls
    on_progress(posts_written) after each batch. The file is written under a temporary name
    (.part) and renamed when complete, and removed if anything fails (a full disk included:
    OSError), so no reader ever sees half an export."""
    fd, tmp = tempfile.mkstemp(prefix=f"posts-{user.id}-", suffix=".json.part",
                               dir=export_dir())
    try:
        with os.fdopen(fd, "wb") as out:
            write_export("json", user, out, on_progress, batch_size)
    except BaseException:
        os.unlink(tmp)
        raise
    final = Path(tmp[: -len(".part")])
    os.replace(tmp, final)
    return final
