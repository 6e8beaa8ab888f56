"""/api/events: the token's user's events as Server-Sent Events, the same stream as the
page's /events (app/live/stream.py): the current state first, then every task's progress
and end and the unread-messages count as they happen; Last-Event-ID resumes. It ends with
`event: logout` once the token is revoked or expires (checked at every keep-alive)."""

from __future__ import annotations

from flask import Response

from app import db
from app.api import bp
from app.api.auth import authenticated, current_api_user
from app.api.conventions import Resource
from app.api.problems import ApiProblem
from app.live.stream import event_stream
from app.models import ApiToken, utcnow

blp = Resource("events", __name__, url_prefix="/events",
                description="Live events (Server-Sent Events).")

REFUSALS = {429: "too-many-streams", 503: "events-unavailable"}


def _token_alive(token_id: int) -> bool:
    token = db.session.get(ApiToken, token_id)
    return token is not None and (token.expires_at is None or token.expires_at > utcnow())


@blp.route("")
@blp.doc(parameters=[{"in": "header", "name": "Last-Event-ID", "required": False,
                      "schema": {"type": "string"}}],
         responses={"200": {"description": "the stream", "content": {"text/event-stream": {
             # One event, as OpenAPI 3.2 describes a stream's items (`data` is JSON text).
             "schema": {"type": "object", "properties": {
                 "event": {"type": "string"}, "data": {"type": "string"},
                 "id": {"type": "string"}, "retry": {"type": "integer"}}}}}},
                    "429": "TOO_MANY_REQUESTS",
                    "503": "SERVICE_UNAVAILABLE"})
def stream() -> Response:
    """Your live events

    Each is `id: <id>` and `data: {"name": ..., "data": ..., "timestamp": ...}` (a task's
    progress is `task_progress`, its data the task's state). Too many streams open: 429."""
    token = authenticated()
    assert token is not None  # the blueprint authenticated the request
    token_id = token.id
    response = event_stream(current_api_user(), lambda: _token_alive(token_id),
                            check_on_heartbeat=True)
    if response.status_code >= 400:  # refused (a cap, Redis down): in the API's words
        raise ApiProblem(response.status_code, REFUSALS.get(response.status_code, "error"),
                         response.get_data(as_text=True).strip(),
                         headers={"Retry-After": response.headers.get("Retry-After", "60")})
    return response


bp.register_blueprint(blp)
