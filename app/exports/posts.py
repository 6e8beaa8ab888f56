"""Reading a user's posts for an export: in (timestamp, id) order, a batch at a time, so that
every format's writer holds one batch in memory whatever the number of posts; and the posts'
timestamps as every format writes them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from app import db
from app.models import Post, User


def count_posts(user: User) -> int:
    return db.session.scalar(
        sa.select(sa.func.count(Post.id)).where(Post.user_id == user.id)) or 0


def iter_post_batches(user: User, batch_size: int):
    """Yield lists of (id, body, timestamp, language) for the user's posts, oldest first,
    `batch_size` rows at a time (keyset pagination: constant memory, no long cursor). The
    timestamp is already the text every format writes (format_timestamp's)."""
    last_ts, last_id = None, None
    user_id = user.id
    # The timestamp as the driver returns it (SQLite: the text SQLAlchemy stored; PostgreSQL
    # and MySQL: a datetime), without SQLAlchemy's conversion: turned into the export's text
    # directly, and compared as stored for the next batch.
    timestamp = sa.type_coerce(Post.timestamp, sa.types.NullType())
    columns = (Post.id, Post.body, timestamp, Post.language)
    while True:
        query = sa.select(*columns).where(Post.user_id == user_id)
        if last_id is not None:
            # "(timestamp, id) after the last row", spelled so that the leading
            # `timestamp >= last_ts` is a range on ix_post_user_timestamp: with only the
            # OR form, SQLite scans the user's posts from the first one for every batch.
            query = query.where(
                timestamp >= last_ts, sa.or_(timestamp > last_ts, Post.id > last_id))
        query = query.order_by(Post.timestamp, Post.id).limit(batch_size)
        # MariaDB reads the condition as a lookup of the user's rows from their first one
        # (access type "ref" on the user_id prefix), filtering on the way: each batch costs
        # more than the one before, and a 100,000-post export in batches of 10 took minutes.
        # The hint makes it a range from the last row, as SQLite and PostgreSQL do by themselves.
        query = query.with_hint(Post, "FORCE INDEX (ix_post_user_timestamp)", "mysql")
        query = query.with_hint(Post, "FORCE INDEX (ix_post_user_timestamp)", "mariadb")
        # Core execution on the session's connection (asked for each batch: the progress
        # callback commits, which releases it), the rows fetched from the DB-API cursor as
        # plain tuples: SQLAlchemy's Row objects and its datetime parsing cost as much as
        # the query itself, and the ORM's loading three times that.
        result = db.session.connection().execute(query)
        try:
            rows = result.cursor.fetchall()
        finally:
            result.close()
        if not rows:
            return
        last_id, _, last_ts, _ = rows[-1]
        text = _stored_text_to_export if isinstance(last_ts, str) else format_timestamp
        yield [(post_id, body, text(stamp), language)
               for post_id, body, stamp, language in rows]
        if len(rows) < batch_size:
            return


def iter_post_rows(user: User, batch_size: int):
    """Yield (id, body, timestamp text, language) for the user's posts, oldest first."""
    for rows in iter_post_batches(user, batch_size):
        yield from rows


def format_timestamp(value: datetime) -> str:
    """A post's time as the exports write it: ISO 8601 UTC, microseconds when not zero."""
    return f"{value.isoformat()}Z"


def _stored_text_to_export(text: str) -> str:
    """format_timestamp of the datetime SQLite's text holds. SQLAlchemy stores a DateTime
    there as 'YYYY-MM-DD HH:MM:SS.ffffff', which needs only a `T` (and no `.000000`, as
    isoformat() leaves it out); any other text is parsed."""
    if len(text) == 26 and text[10] == " " and text[19] == ".":
        if text.endswith(".000000"):
            return f"{text[:10]}T{text[11:19]}Z"
        return f"{text[:10]}T{text[11:]}Z"
    return format_timestamp(datetime.fromisoformat(text))


def parse_timestamp(text: str) -> datetime:
    """The naive UTC datetime (as the database holds it) of a timestamp the exports wrote."""
    return datetime.fromisoformat(text.removesuffix("Z"))
