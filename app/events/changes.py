"""Each user's change generation: a value in Redis that changes after every commit that could
change what the API says about the user's tasks, exports, imports or tokens. The API's poll
cache (app/api/poll_cache.py) answers a poll from Redis only while the generation it saw when
the app last answered is still the user's.

Sound by default, cheap where the owner is known:
- every event a user sees is published with a bump of that user's generation, in the same
  Lua script (app/events/): each task's progress and state change goes through one;
- an ORM change (insert, update, delete) of a watched row bumps its owner's generation after
  the commit (`watch`);
- an UPDATE or DELETE statement on a watched table bumps the owner named by its
  `changes_owner` execution option (a user id, or PUBLISHED: the caller publishes an event to
  the owner in the same transaction), and, without that option, every user's generation at
  once (the `all` key): bulk statements do not say whose rows they touched.

A generation's value is the Redis clock and a counter, never reused: a key that was evicted
and made again cannot come back to a value an old cache entry holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import redis
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, has_app_context

log = logging.getLogger(__name__)

PREFIX = "microblog:changes:"  # + user id; PREFIX + "all" for changes of unknown owners
EVERYONE = "all"
COUNTER = PREFIX + "counter"
# Longer than any cache entry lives: an entry never outlives the generation it was made with.
TTL = 7 * 24 * 3600
# The changes_owner option of a statement whose owner is told by an event in its transaction.
PUBLISHED = "published"
_PENDING = "microblog_changes"  # key in Session.info: owners whose generation goes after commit


def bump_lua(key_index: int) -> str:
    """Lua that gives KEYS[key_index] (a generation key) a new value: shared by the bump
    script and app/events/__init__.py's publish script. COUNTER is named in full, not in KEYS: one
    Redis, never a cluster (the poll cache's lookup does the same)."""
    return (f"local now = redis.call('TIME')\n"
            f"redis.call('SET', KEYS[{key_index}], now[1] .. '.' .. now[2] .. '.' .. "
            f"redis.call('INCR', '{COUNTER}'), 'EX', {TTL})\n")


_BUMP = bump_lua(1) + "return 1"


def key(owner: int | str) -> str:
    return f"{PREFIX}{owner}"


def bump(connection: redis.Redis, owners: Iterable[int | str]) -> None:
    """Change the generation of each of `owners` (user ids, or EVERYONE) now. Redis errors are
    logged: a cache entry then lives out its TTL (a minute at most)."""
    try:
        with connection.pipeline(transaction=False) as pipe:
            for owner in sorted(set(owners), key=str):
                pipe.eval(_BUMP, 1, key(owner))
            pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("Change generations of %s not bumped: %s", owners, exc)


def note(session: so.Session, owner: int | str) -> None:
    """Bump `owner`'s generation once `session` commits (forgotten if it rolls back)."""
    session.info.setdefault(_PENDING, set()).add(owner)


def watch(model: type, owner_of: Callable[[object], int | None] = lambda row: row.user_id,
          changed: Callable[[so.Session, object], bool] = lambda session, row: True) -> None:
    """Bump the owner (`owner_of(row)`) of every `model` row a flush deletes, and of every row
    it inserts or updates when `changed(session, row)`."""
    _WATCHED[model] = (owner_of, changed)
    _WATCHED_TABLES.add(model.__table__.name)


_WATCHED: dict[type, tuple[Callable, Callable]] = {}
_WATCHED_TABLES: set[str] = set()


def _after_flush(session: so.Session, flush_context: object) -> None:
    for rows, deleted in ((session.new, False), (session.deleted, True),
                          (session.dirty, False)):
        for row in rows:
            watched = _WATCHED.get(type(row))
            if watched is None:
                continue
            owner_of, changed = watched
            if not deleted and not changed(session, row):
                continue
            owner = owner_of(row)
            note(session, owner if owner is not None else EVERYONE)


def _on_statement(state: so.ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) not in _WATCHED_TABLES:
        return
    owner = state.execution_options.get("changes_owner")
    if owner == PUBLISHED:
        return
    note(state.session, owner if owner is not None else EVERYONE)


def _bump_pending(session: so.Session) -> None:
    owners = session.info.pop(_PENDING, None)
    if owners and has_app_context():
        bump(current_app.redis, owners)


def _drop_pending(session: so.Session, transaction: so.SessionTransaction) -> None:
    # Runs after after_commit (which took the owners); what is left was rolled back.
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_PENDING, None)


sa.event.listen(so.Session, "after_flush", _after_flush)
sa.event.listen(so.Session, "do_orm_execute", _on_statement)
sa.event.listen(so.Session, "after_commit", _bump_pending)
sa.event.listen(so.Session, "after_transaction_end", _drop_pending)
