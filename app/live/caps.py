"""How many /events streams may be open at once: per user and per client address, counted in
Redis (app/security/slots.py: every web process on every host shares the count, and a killed
process's streams free their places one lease later), and per web process, counted here.

A stream holds a connection of its web process for up to EVENTS_MAX_AGE, and reconnects by
itself: without a cap one account can hold every connection gunicorn will accept, and other
people's pages then wait in the listen queue. The newest stream past a cap is refused (429
for a user or an address, 503 for a full process), and its page polls /notifications instead
(app/static/js/microblog.js tries the stream again a minute later). Refusing the newest
rather than closing the oldest: a closed stream's page reconnects within a second, which
would close another, and so on round the user's tabs.
"""

from __future__ import annotations

import threading

import redis

from app.security import slots

USER_KEY = "microblog:streams:user:"  # + user id
ADDRESS_KEY = "microblog:streams:address:"  # + client address

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
    """How many streams this web process holds now (what EVENTS_MAX_PER_PROCESS caps)."""
    return _process.open


def lease_seconds(heartbeat: float) -> float:
    """Long enough for two renewals to be missed (a busy process), short enough that a killed
    process's places are back within a minute at the default heartbeat."""
    return 3 * heartbeat + 5


def acquire(connection: redis.Redis, user_id: int, address: str, config) -> slots.Slot:
    """A place for a new stream of `user_id` from `address`; the stream renews it at least
    every EVENTS_HEARTBEAT. Raises StreamRefused when a cap is full, and RedisError (with
    nothing held) when Redis cannot count."""
    per_process = config["EVENTS_MAX_PER_PROCESS"]
    if not _process.take(per_process):
        raise StreamRefused(PROCESS_FULL, per_process)
    caps = (config["EVENTS_MAX_PER_USER"], config["EVENTS_MAX_PER_ADDRESS"])
    heartbeat = config["EVENTS_HEARTBEAT"]
    try:
        return slots.take(connection, [f"{USER_KEY}{user_id}", f"{ADDRESS_KEY}{address}"],
                          caps, lease_seconds(heartbeat), heartbeat, _process.give_back)
    except slots.Full as full:
        _process.give_back()
        raise StreamRefused((USER_FULL, ADDRESS_FULL)[full.index], caps[full.index]) from None
    except BaseException:
        _process.give_back()
        raise
