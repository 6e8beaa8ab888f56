"""One Redis pub/sub connection per web process, shared by every event stream it serves.

A thread (a greenlet under gunicorn's gevent worker) pattern-subscribes to every user's
channel and hands each message to the listeners of that user in this process: a thousand
open tabs cost a thousand small queues, not a thousand Redis connections. When Redis goes
away every listener is told (its stream ends, and the browser reconnects or falls back to
polling) and the thread reconnects on its own.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field

import redis

from app import events

log = logging.getLogger(__name__)

# How long a new stream waits for the hub's subscription before answering 503.
SUBSCRIBE_TIMEOUT = 3.0
# A listener whose stream does not keep up (a stalled client) is dropped past this many
# waiting events; its browser reconnects and replays from the event log.
LISTENER_BACKLOG = 500


class HubUnavailable(ConnectionError):
    """The process could not subscribe to Redis in time."""


@dataclass(eq=False)
class Listener:
    """The events of one user for one open stream. `get` returns (event id, name, JSON text);
    None means the stream must end (Redis lost, or this listener fell too far behind)."""

    user_id: int
    queue: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def get(self, timeout: float) -> tuple[str, str, str] | None:
        return self.queue.get(timeout=timeout)  # raises queue.Empty on timeout

    def end(self) -> None:
        self.queue.put(None)


class Hub:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self.prefix = events.channel_prefix(connection).encode()
        self.lock = threading.Lock()
        self.listeners: dict[int, set[Listener]] = {}
        self.subscribed = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopping = False  # this process is shutting down: no new streams

    def subscribe(self, user_id: int) -> Listener:
        """A listener for the user's events from now on. Raises HubUnavailable when the
        process is not subscribed to Redis within SUBSCRIBE_TIMEOUT."""
        if self.stopping:
            raise HubUnavailable("this web process is stopping")
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
                self.thread.start()
            thread = self.thread
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while not self.subscribed.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:  # Redis refused, or slow
                raise HubUnavailable("not subscribed to Redis")
        listener = Listener(user_id)
        with self.lock:
            self.listeners.setdefault(user_id, set()).add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        with self.lock:
            group = self.listeners.get(listener.user_id)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self.listeners[listener.user_id]

    def count(self) -> int:
        with self.lock:
            return sum(len(group) for group in self.listeners.values())

    def _run(self) -> None:
        """Until Redis fails: then every stream ends, and the next one to open starts a new
        thread (its browser retries by itself, or polls while Redis stays away)."""
        try:
            self._listen()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("Live events: lost Redis (%s); open streams end", exc)
        except Exception:
            log.exception("Live events: the hub failed; open streams end")
        finally:
            self.subscribed.clear()
            self.end_all()

    def _listen(self) -> None:
        pubsub = self.connection.pubsub()
        try:
            pubsub.psubscribe(self.prefix + b"*")
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    # Confirmed by Redis: from here on no published event is missed, so a
                    # stream may read the log and the database knowing the rest will come.
                    self.subscribed.set()
                elif message["type"] == "pmessage":
                    self._dispatch(message["channel"], message["data"])
        finally:
            pubsub.close()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            user_id = int(channel[len(self.prefix):])
            event_id, _, text = data.decode().partition(" ")
            name = json.loads(text)["name"]
        except (ValueError, KeyError, TypeError):
            log.warning("Live events: malformed message on %r", channel)
            return
        with self.lock:
            group = list(self.listeners.get(user_id, ()))
        for listener in group:
            if listener.queue.qsize() >= LISTENER_BACKLOG:
                self.unsubscribe(listener)
                listener.end()
            else:
                listener.queue.put((event_id, name, text))

    def end_all(self) -> None:
        with self.lock:
            everyone = [listener for group in self.listeners.values() for listener in group]
            self.listeners.clear()
        for listener in everyone:
            listener.end()


_hubs_lock = threading.Lock()
_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def hub_for(app) -> Hub:
    """The app's hub in this process (a forked child starts its own)."""
    with _hubs_lock:
        pid, hub = app.extensions.get("event_hub", (None, None))
        if pid != os.getpid():
            hub = Hub(app.redis)
            app.extensions["event_hub"] = (os.getpid(), hub)
            _hubs.add(hub)
        return hub


def end_streams_when_stopped(worker) -> None:
    """gunicorn's post_worker_init (gunicorn.conf.py): as soon as this worker process is told
    to stop, end its streams, so that a restart does not wait graceful_timeout for open tabs
    (their browsers reconnect at once, to a worker that is not stopping)."""

    def watch() -> None:
        while worker.alive:
            time.sleep(0.5)
        with _hubs_lock:
            hubs = list(_hubs)
        for hub in hubs:
            hub.stopping = True
            hub.end_all()

    threading.Thread(target=watch, name="event-hub-stop", daemon=True).start()
