"""Live push, the publishing side: each notification a user gets (a task's progress or state,
the unread-messages count) is published to that user's Redis channel once the database commit
that wrote it has happened, so that a page that reconnects and reads the state never sees it
go backwards.

Every event is appended to the user's event log (a capped Redis stream, whose ids are the
event ids the browser's EventSource sends back as Last-Event-ID) and published on the user's
pub/sub channel with that id, both in one Lua script: a stream of /events (app/live/) that
subscribed before reading the log sees each event exactly once, live or replayed.

Beside it, changes.py: each user's change generation, which the same script moves on with
every event (the API's poll cache answers from Redis only while it has not moved).

Nothing here imports our models: app/models.py calls `queue_event` from add_notification.
Other writes that belong after the same commit (the task lifecycle's metrics) join the
events' pipeline through `after_commit`: one round trip to Redis per commit, not one each.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

import redis
import sqlalchemy as sa
from flask import current_app, has_app_context

from app.events import changes

log = logging.getLogger(__name__)

# Pub/sub channels, unlike keys, are shared by every database of a Redis server: the channel
# names the database too, or two sites on one server (db 0 and db 1) would see each other's
# users' events.
CHANNEL_PREFIX = "microblog:events:"  # + "<db>:<user id>": what a web process forwards
LOG_PREFIX = "microblog:eventlog:"  # + user id: the stream an EventSource resumes from
# Enough for every event of a few minutes of two running tasks (at most ~100 progress events
# each): a tab that was away longer gets the current state instead of the replay.
LOG_MAXLEN = 1000
LOG_TTL = 24 * 3600
_PENDING = "microblog_events"  # key in Session.info: writes waiting for the commit
EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# Each part of a stream id is an unsigned 64-bit number: Redis refuses anything larger.
_ID_PART_MAX = 2**64 - 1

# KEYS: log, channel, the user's change generation. ARGV: event JSON, max length, TTL. The id
# is the stream's: it orders the user's events as they were published, across every worker
# and web process. Whatever a user sees change, the API's poll cache must see too
# (app/events/changes.py): the generation changes in the same script.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[1])
""" + changes.bump_lua(3) + """
return id
"""


def channel_prefix(connection: redis.Redis) -> str:
    """The channels of the users of `connection`'s database: the prefix before the user id."""
    return f"{CHANNEL_PREFIX}{connection.connection_pool.connection_kwargs.get('db', 0)}:"


def channel(connection: redis.Redis, user_id: int) -> str:
    return f"{channel_prefix(connection)}{user_id}"


def log_key(user_id: int) -> str:
    return f"{LOG_PREFIX}{user_id}"


def event(name: str, data: object, timestamp: float | None = None) -> dict:
    """An event as the page reads it: the shape of one /notifications item, plus the time it
    was published (for the latency benchmark)."""
    return {"name": name, "data": data, "timestamp": timestamp or time.time()}


# A write to Redis that waits for a commit: it adds its commands to the pipeline it is given.
Write = Callable[[redis.client.Pipeline], None]


def after_commit(session, write: Write) -> None:
    """Have `write` add its commands to the pipeline sent once `session` commits (dropped if
    it rolls back), after the events queued before it."""
    session.info.setdefault(_PENDING, []).append(write)


def queue_event(session, user_id: int, name: str, data: object, timestamp: float) -> None:
    """Publish this event after `session` commits (dropped if it rolls back)."""
    payload = event(name, data, timestamp)
    after_commit(session, lambda pipeline: _publish(pipeline, user_id, payload))


def _publish(client: redis.Redis | redis.client.Pipeline, user_id: int, payload: dict):
    """The script that appends the event to the user's log and publishes it (its reply,
    the event id, is the command's; a pipeline gives it with the others)."""
    payload = dict(payload, sent=time.time())
    return client.eval(_PUBLISH, 3, log_key(user_id), channel(client, user_id),
                       changes.key(user_id), json.dumps(payload), LOG_MAXLEN, LOG_TTL)


def publish(connection: redis.Redis, user_id: int, payload: dict) -> str | None:
    """Append to the user's log and publish; returns the event id, None when Redis failed
    (logged: the page then learns the state from its next poll or reconnect)."""
    try:
        event_id = _publish(connection, user_id, payload)
    except redis.exceptions.RedisError as exc:
        log.warning("Live event for user %s not published: %s", user_id, exc)
        return None
    return _decode(event_id)


# Events for the user's open streams themselves, never forwarded to a page: each stream
# checks that its login session still exists, and ends with a `logout` event if not.
SESSIONS_CHANGED = "sessions"


def _write_pending(session) -> None:
    """Every write queued for this commit, in one pipeline (a transaction: a scrape of the
    metrics never sees half of them). A write lost while Redis is away is logged: the page
    learns the state from its next poll or reconnect, and the job the metrics describe has
    not failed."""
    pending = session.info.pop(_PENDING, None)
    if not pending or not has_app_context():
        return
    try:
        with current_app.redis.pipeline() as pipeline:
            for write in pending:
                write(pipeline)
            pipeline.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("Live events and metrics of a commit not written: %s", exc)


def _drop_unpublished(session, transaction) -> None:
    # Runs after after_commit (which took the events); what is left was rolled back.
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_PENDING, None)


sa.event.listen(sa.orm.Session, "after_commit", _write_pending)
sa.event.listen(sa.orm.Session, "after_transaction_end", _drop_unpublished)


def parse_id(value: str | None) -> tuple[int, int] | None:
    """A Last-Event-ID as the stream's (milliseconds, sequence), None if it is not one."""
    if not value or not EVENT_ID.fullmatch(value):
        return None
    ms, seq = (int(part) for part in value.split("-"))
    if ms > _ID_PART_MAX or seq > _ID_PART_MAX:
        return None
    return ms, seq


def replay(connection: redis.Redis, user_id: int,
           last_id: str) -> list[tuple[str, str, str]] | None:
    """The user's events after `last_id`, oldest first, as (id, name, JSON text); None when
    the log no longer holds `last_id` itself (trimmed, expired, or an id that never existed):
    the caller then sends the current state instead, since a gap cannot be ruled out."""
    entries = connection.xrange(log_key(user_id), min=last_id, max="+", count=LOG_MAXLEN + 1)
    if not entries or _decode(entries[0][0]) != last_id:
        return None
    replayed = []
    for entry_id, fields in entries[1:]:
        text = _decode(fields[b"event"])
        replayed.append((_decode(entry_id), json.loads(text)["name"], text))
    return replayed


def latest_id(connection: redis.Redis, user_id: int) -> str:
    """The id of the user's newest event ("0-0" when there is none)."""
    entries = connection.xrevrange(log_key(user_id), count=1)
    return _decode(entries[0][0]) if entries else "0-0"


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
