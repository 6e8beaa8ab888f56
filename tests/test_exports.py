"""The export file itself (app/exports/formats.py): exact content, order, batching, cleanup."""

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from app import db
from app.exports.formats import write_export
from app.exports.storage import get_storage
from app.models import Post
from tests.conftest import make_user

KEY = "1/export/attempt/posts.json"


def _write(user, on_progress=None, batch_size=None) -> bytes:
    """posts.json as a worker writes it (app/exports/delivery.py): write_export into export
    storage, which publishes the file only once it is complete."""
    storage = get_storage()
    with storage.writer(KEY) as out:
        write_export("json", user, out, on_progress, batch_size)
    return b"".join(storage.read(KEY))


def _read(data: bytes):
    return json.loads(data.decode("utf-8"))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_posts_come_out_oldest_first_whatever_the_batch_size(app, batch_size):
    user = make_user()
    base = datetime(2024, 1, 1, 12, 0, 0)
    # Several posts share a timestamp, and ids are not in time order.
    stamps = [base + timedelta(minutes=m) for m in (5, 1, 1, 3, 1, 0, 5)]
    for i, ts in enumerate(stamps):
        db.session.add(Post(body=f"post {i}", timestamp=ts, author=user))
    db.session.commit()
    data = _read(_write(user, batch_size=batch_size))
    times = [p["timestamp"] for p in data["posts"]]
    assert times == sorted(times)
    assert sorted(p["body"] for p in data["posts"]) == sorted(f"post {i}" for i in range(7))
    assert len({p["id"] for p in data["posts"]}) == 7


def test_bodies_round_trip_exactly(app):
    bodies = ['<a href="x">&amp;</a>', "\"'\\", "😀 한국어 ñ", "a\nb\r\nc\t", "\u2028\u2029"]
    user = make_user(posts=bodies)
    data = _read(_write(user))
    assert [p["body"] for p in data["posts"]] == bodies
    assert data["format"] == "microblog-posts" and data["exported_at"].endswith("Z")


def test_only_the_users_own_posts_are_exported(app):
    make_user("other", posts=["not mine"])
    user = make_user(posts=["mine"])
    data = _read(_write(user))
    assert [p["body"] for p in data["posts"]] == ["mine"]


def test_progress_is_reported_after_each_batch_written(app):
    user = make_user(posts=[f"p{i}" for i in range(5)])
    seen = []
    _write(user, on_progress=seen.append, batch_size=2)
    assert seen == [2, 4, 5]


def test_a_failed_export_leaves_no_partial_file(app):
    user = make_user(posts=["a", "b"])

    def explode(done):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _write(user, on_progress=explode)
    assert [p for p in Path(app.config["EXPORT_FOLDER"]).rglob("*") if p.is_file()] == []


def test_posts_json_is_byte_for_byte_the_seeds_format(app):
    user = make_user()
    first = Post(body='say "hi" 😀\n', timestamp=datetime(2024, 1, 2, 3, 4, 5, 600), author=user,
                 language="en")
    second = Post(body="한국어", timestamp=datetime(2024, 1, 2, 3, 4, 6), author=user)
    db.session.add_all([first, second])
    db.session.commit()
    data = _write(user)
    stamp = re.search(rb'"exported_at": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z)"', data)
    assert stamp, data
    assert data == (
        b'{"format": "microblog-posts", "version": 1, "user": "susan", "exported_at": "'
        + stamp.group(1) + b'", "posts": [\n'
        + f'{{"id": {first.id}, "body": "say \\"hi\\" 😀\\n", '
          f'"timestamp": "2024-01-02T03:04:05.000600Z", "language": "en"}},\n'
          f'{{"id": {second.id}, "body": "한국어", "timestamp": "2024-01-02T03:04:06Z", '
          f'"language": null}}\n]}}\n'.encode())
