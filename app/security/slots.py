"""Places in a count of things open at once (streams, downloads), kept in Redis so that every
web process on every host shares the count, and safe when a process dies holding some.

Each count is a sorted set of place ids scored by the time the place's lease ends. The holder
renews its lease while it works (`renew_if_due`, from the loop that sends) and gives the place
back when it ends (`release`); taking a place first drops expired leases, so the places of a
process that was killed free themselves one lease later.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import redis

log = logging.getLogger(__name__)

# KEYS: the counts. ARGV: place id, lease seconds, then each count's cap (0: none). Returns 0
# when the place is taken in every count, else the number (from 1) of the first full one.
# Redis's clock, not the web host's: every host then reads leases alike.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local cap = tonumber(ARGV[i + 2])
  if cap > 0 and redis.call('ZCARD', key) >= cap then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(lease))
end
return 0
"""
# KEYS: the counts. ARGV: place id, lease seconds. Renews only a lease still held.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])))
end
"""


class Full(Exception):
    """The count `index` (of the keys given to `take`) is at its cap."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(eq=False)
class Slot:
    """One holder's place in each count; `release` (idempotent) gives it back."""

    connection: redis.Redis
    keys: Sequence[str]
    lease: float
    renew_every: float
    on_release: Callable[[], None] | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    _next_renewal: float = 0.0
    _released: bool = False

    def renew_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_renewal:
            return
        self._next_renewal = now + self.renew_every
        try:
            self.connection.eval(_RENEW, len(self.keys), *self.keys, self.id, self.lease)
        except redis.exceptions.RedisError as exc:  # the lease may lapse: the cap loosens
            log.warning("Slot %s not renewed: %s", self.keys[0], exc)

    def renewing(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """`chunks`, renewing the lease as they are sent; released at the end."""
        try:
            for chunk in chunks:
                self.renew_if_due()
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            self.release()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.on_release is not None:
            self.on_release()
        try:
            for key in self.keys:
                self.connection.zrem(key, self.id)
        except redis.exceptions.RedisError as exc:  # the lease ends it anyway
            log.warning("Slot %s not released: %s", self.keys[0], exc)


def take(connection: redis.Redis, keys: Sequence[str], caps: Sequence[int], lease: float,
         renew_every: float, on_release: Callable[[], None] | None = None) -> Slot:
    """A place in each of the counts `keys`, whose caps are `caps`. Raises Full when one is
    at its cap, RedisError when Redis cannot count (nothing is held then)."""
    slot = Slot(connection, keys, lease, renew_every, on_release)
    slot._next_renewal = time.monotonic() + renew_every
    full = connection.eval(_TAKE, len(keys), *keys, slot.id, lease, *caps)
    if full:
        raise Full(int(full) - 1)
    return slot
