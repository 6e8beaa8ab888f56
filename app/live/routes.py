"""GET /events: the logged-in user's events as Server-Sent Events (text/event-stream), as
app/live/stream.py makes them; the stream ends when this browser's login session does."""

from __future__ import annotations

from flask import Response
from flask_babel import _
from flask_login import current_user

from app import db
from app.live import bp
from app.live.stream import event_stream, plain
from app.models import UserSession


@bp.route("/events")
def stream() -> Response:
    if not current_user.is_authenticated:
        # No redirect to the login page: EventSource would read it as a broken stream.
        return plain(_("Log in to receive live updates."), 401)
    session_id = UserSession.digest(current_user.session_token)
    return event_stream(current_user._get_current_object(),
                        lambda: db.session.get(UserSession, session_id) is not None)
