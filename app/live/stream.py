"""A user's events as Server-Sent Events (text/event-stream): the page's GET /events
(app/live/routes.py, for the logged-in user) and the API's GET /api/events (for the token's
user) both answer with `event_stream`.

A new stream first sends the current state (the task alerts the page shows, the unread
messages count), then each event as it is published. Every event carries its id in the
user's event log, so a client that lost the connection reconnects with Last-Event-ID and
gets exactly what it missed, or the current state when the log no longer reaches back that
far. The stream's user is the caller: there is no channel or user in the URL. It ends (with
an `event: logout`) when what let the caller in is gone: the login session, or the token.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator

import redis
from flask import Response, current_app, request, stream_with_context
from flask_babel import _

from app import db, events
from app.jobs import failures, reconcile
from app.live import caps
from app.live.hub import Hub, HubUnavailable, Listener, hub_for
from app.models import Notification, User
from app.security import slots
from app.security.limits import client_address

# The browser waits this long before reconnecting to a stream that ended.
RETRY_MS = 1000
# A refused stream's page polls, and tries the stream again this many seconds later
# (STREAM_RETRY in app/static/js/microblog.js).
RETRY_AFTER = 60


def event_stream(user: User, alive: Callable[[], bool], check_on_heartbeat: bool = False,
                 ) -> Response:
    """The stream of `user`'s events. `alive()` says whether the caller may still listen
    (their login session or token still there): asked when the user's sessions change and,
    with `check_on_heartbeat`, at every keep-alive too (a token may expire or be revoked
    without an event). Refused (429, 503 with Retry-After) when a cap is full or Redis is
    down."""
    user_id = user.id
    last_id = request.headers.get("Last-Event-ID")
    connection = current_app.redis
    config = current_app.config
    hub = hub_for(current_app._get_current_object())
    listener = slot = None
    try:
        # First, before any work: a refused stream costs one Redis call.
        slot = caps.acquire(connection, user_id, client_address(), config)
        # As a poll does: a task whose worker died ends.
        reconcile.reconcile_user_tasks(user)
        listener = hub.subscribe(user_id)
        backlog = events.replay(connection, user_id, last_id) if events.parse_id(last_id) else None
        if backlog is None:
            backlog = _current_state(user, events.latest_id(connection, user_id))
        # The listener also holds what was published after it subscribed, some of it in the
        # backlog too: replayed, or committed before the state was read (up to the log's head).
        covered = events.parse_id(backlog[-1][0] if backlog else last_id)
    except caps.StreamRefused as refused:
        return _refused(refused)
    except BaseException as exc:  # whatever failed, the places taken are given back
        if listener is not None:
            hub.unsubscribe(listener)
        if slot is not None:
            slot.release()
        if not isinstance(exc, (HubUnavailable, redis.exceptions.RedisError)):
            raise
        if hub.stopping:  # a restart: come back at once (to a process that is not stopping)
            return Response(f"retry: {RETRY_MS}\n\n", mimetype="text/event-stream")
        # EventSource gives up on an error status: the page polls /notifications instead.
        return plain(_("Live updates are unavailable; the page checks for news instead."),
                     503, retry_after=True)
    db.session.close()  # the stream holds no database connection while it waits
    body = _events(hub, listener, slot, backlog, covered, alive, check_on_heartbeat,
                   config["EVENTS_HEARTBEAT"], config["EVENTS_MAX_AGE"])
    response = Response(stream_with_context(body), mimetype="text/event-stream", headers={
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
    })
    # Also when the body never starts (the client left at once): its slot is not kept.
    response.call_on_close(slot.release)
    return response


def _refused(refused: caps.StreamRefused) -> Response:
    """A cap is full: an error status, so that the page polls instead (and tries the stream
    again after RETRY_AFTER seconds, as Retry-After says)."""
    if refused.which == caps.PROCESS_FULL:
        return plain(_("This server has as many live update streams open as it can take; "
                     "the page checks for news instead."), 503, retry_after=True)
    if refused.which == caps.USER_FULL:
        text = _("Your account already has %(limit)d live update streams open (in other tabs "
                 "or browsers), the most it may have; this page checks for news instead.",
                 limit=refused.limit)
    else:
        text = _("%(limit)d live update streams are open from your network address already, "
                 "the most it may have; this page checks for news instead.",
                 limit=refused.limit)
    return plain(text, 429, retry_after=True)


def plain(text: str, status: int, retry_after: bool = False) -> Response:
    response = Response(text + "\n", status=status, mimetype="text/plain")
    if retry_after:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _current_state(user: User, head: str) -> list[tuple[str, str, str]]:
    """What a page needs to be up to date: the notification of each task alert it shows and
    the unread messages count, all under the id of the newest event in the log (everything
    up to it is already in the database)."""
    topics = [task.id for task in user.visible_tasks()]
    notes = db.session.scalars(
        user.notifications.select().where(Notification.name == "task_progress",
                                          Notification.topic.in_(topics))
        .order_by(Notification.timestamp)) if topics else []
    state = [events.event(n.name, n.get_data(), n.timestamp) for n in notes]
    state.append(events.event("unread_message_count", user.unread_message_count(), 0.0))
    return [(head, item["name"], json.dumps(item)) for item in state]


def _events(hub: Hub, listener: Listener, slot: slots.Slot, backlog: list[tuple[str, str, str]],
            covered: tuple[int, int], alive: Callable[[], bool], check_on_heartbeat: bool,
            heartbeat: float, max_age: float) -> Iterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        for item in backlog:
            if (chunk := _forward(item, alive)) is not None:
                yield chunk
                if chunk.startswith("event: logout"):
                    return
        ends = time.monotonic() + max_age
        while (left := ends - time.monotonic()) > 0:
            slot.renew_if_due()
            try:
                item = listener.get(timeout=min(heartbeat, left))
            except queue.Empty:
                if check_on_heartbeat and not _still(alive):
                    yield _logout(None)
                    return
                yield ": keep-alive\n\n"
                continue
            if item is None:  # Redis lost or this stream fell behind: the browser reconnects
                return
            # Sent once already, and older than what followed it: the bar would step back.
            # (A logout check is cheap and is never skipped.)
            if item[1] != events.SESSIONS_CHANGED and events.parse_id(item[0]) <= covered:
                continue
            if (chunk := _forward(item, alive)) is not None:
                yield chunk
                if chunk.startswith("event: logout"):
                    return
    finally:
        hub.unsubscribe(listener)
        slot.release()


def _forward(item: tuple[str, str, str], alive: Callable[[], bool]) -> str | None:
    """The text sent for one event: None for a control event that changes nothing here. A
    task's event, written by a worker with its reason in English, gets it in the reader's
    language."""
    event_id, name, text = item
    if name == events.SESSIONS_CHANGED:
        if _still(alive):
            return None
        return _logout(event_id)
    if name == "task_progress":
        event = json.loads(text)
        text = json.dumps(dict(event, data=failures.notification_for_reader(name, event["data"])))
    return f"id: {event_id}\ndata: {text}\n\n"


def _logout(event_id: str | None) -> str:
    """The stream's last event: the client's credentials are gone (it should not reconnect
    with them). With the id of the event that said so, when there is one."""
    if event_id is None:
        return "event: logout\ndata: {}\n\n"
    return f"event: logout\nid: {event_id}\ndata: {{}}\n\n"


def _still(alive: Callable[[], bool]) -> bool:
    """alive(), holding no database connection after it (the stream waits for long)."""
    try:
        return alive()
    finally:
        db.session.close()
