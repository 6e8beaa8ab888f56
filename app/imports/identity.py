"""What makes two posts the same post: the identity an import relies on never to add one
twice (Post.origin_key, unique per account: the database refuses the second).

- A Mastodon or X post is the same post when it has the same original id (its status id or
  URL there): its text may have been edited since an earlier archive.
- A post of one of our own archives has no id that outlives the site it was written on: it
  is the same post when its time (to the second, the precision an archive keeps) and its
  text are the same. Its author is the account it is imported into (the row's user_id, the
  other half of the unique constraint).

A Mastodon or X post without an id (a reader found none) falls back to time and text too.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from app.imports.readers import ArchivePost
from app.models import PostOrigin

BY_ORIGINAL_ID = (PostOrigin.MASTODON, PostOrigin.X)


def origin_key(origin: str, post: ArchivePost) -> str:
    """The post's identity key: 64 hex digits (sha256)."""
    if origin in BY_ORIGINAL_ID and post.original_id:
        material = f"{origin}\n{post.original_id}"
    else:
        material = f"{origin}\n{to_the_second(post.timestamp).isoformat()}\n{post.body}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def to_the_second(timestamp: datetime) -> datetime:
    return timestamp.replace(microsecond=0)
