"""How many /events streams may be open at once: per user and per client address, counted in
Redis (every web process on every host shares the count), and per web process, counted here.

A stream holds a connection of its web process for up to EVENTS_MAX_AGE, and reconnects by
itself: without a cap one account can hold every connection gunicorn will accept, and other
people's pages then wait in the listen queue. The newest stream past a cap is refused (429
for a user or an address, 503 for a full process), and its page polls /notifications instead
(app/static/js/microblog.js tries the stream again a minute later). Refusing the newest
rather than closing the oldest: a closed stream's page reconnects within a second, which
would close another, and so on round the user's tabs.

Each Redis count is a sorted set of stream ids scored by the time its lease ends; an open
stream renews its lease as it sends (at least every EVENTS_HEARTBEAT), and counting first
drops expired leases, so the slots of a web process that was killed free themselves.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

import redis

log = logging.getLogger(__name__)

USER_KEY = "microblog:streams:user:"  # + user id: sorted set of stream id -> lease end
ADDRESS_KEY = "microblog:streams:address:"  # + client address

# KEYS: the user's set, the address's set. ARGV: stream id, lease seconds, user cap, address
# cap (0: none). Returns 0 when the stream got its slots, else which cap is full (1 user,
# 2 address). Redis's clock, not the web host's: every host then reads leases alike.
_ACQUIRE = """
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
# KEYS: as above. ARGV: stream id, lease seconds. Renews only a lease still held.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])))
end
"""

USER_FULL, ADDRESS_FULL, PROCESS_FULL = "user", "address", "process"


class StreamRefused(Exception):
    """A cap is full: `which` is USER_FULL, ADDRESS_FULL or PROCESS_FULL; `limit` its size."""

    def __init__(self, which: str, limit: int) -> None:
        super().__init__(which)
        self.which = which
        self.limit = limit


class _ProcessCount:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0

    def take(self, cap: int) -> bool:
        with self.lock:
            if cap and self.open >= cap:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.open -= 1


_process = _ProcessCount()


def open_in_this_process() -> int:
    return _process.open


def lease_seconds(heartbeat: float) -> float:
    """Long enough for two renewals to be missed (a busy process), short enough that a killed
    process's slots are back within a minute at the default heartbeat."""
    return 3 * heartbeat + 5


@dataclass(eq=False)
class Slot:
    """One open stream's place in every count; `release` (idempotent) gives it back."""

    connection: redis.Redis
    keys: list[str]
    lease: float
    stream_id: str = field(default_factory=lambda: secrets.token_hex(8))
    renew_every: float = 0.0
    _next_renewal: float = 0.0
    _released: bool = False

    def renew_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_renewal:
            return
        self._next_renewal = now + self.renew_every
        try:
            self.connection.eval(_RENEW, len(self.keys), *self.keys, self.stream_id, self.lease)
        except redis.exceptions.RedisError as exc:  # the lease may lapse: the cap loosens
            log.warning("Live events: stream slot not renewed: %s", exc)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        _process.give_back()
        try:
            for key in self.keys:
                self.connection.zrem(key, self.stream_id)
        except redis.exceptions.RedisError as exc:  # the lease ends it anyway
            log.warning("Live events: stream slot not released: %s", exc)


def acquire(connection: redis.Redis, user_id: int, address: str, config) -> Slot:
    """A slot for a new stream of `user_id` from `address`. Raises StreamRefused when a cap is
    full, and RedisError (with nothing held) when Redis cannot count."""
    per_process = config["EVENTS_MAX_PER_PROCESS"]
    if not _process.take(per_process):
        raise StreamRefused(PROCESS_FULL, per_process)
    heartbeat = config["EVENTS_HEARTBEAT"]
    slot = Slot(connection, [f"{USER_KEY}{user_id}", f"{ADDRESS_KEY}{address}"],
                lease_seconds(heartbeat), renew_every=heartbeat)
    slot._next_renewal = time.monotonic() + heartbeat
    caps = (config["EVENTS_MAX_PER_USER"], config["EVENTS_MAX_PER_ADDRESS"])
    try:
        full = connection.eval(_ACQUIRE, 2, *slot.keys, slot.stream_id, slot.lease, *caps)
    except BaseException:
        _process.give_back()
        raise
    if full:
        _process.give_back()
        raise StreamRefused((USER_FULL, ADDRESS_FULL)[int(full) - 1], caps[int(full) - 1])
    return slot
