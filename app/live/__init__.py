"""Live push to the page: GET /events, the user's Server-Sent Events stream.

The worker side publishes in app/events/; here each web process keeps one Redis
subscription (hub.py) and forwards every open stream its own user's events (routes.py).
"""

from flask import Blueprint

bp = Blueprint("live", __name__)

from app.live import routes  # noqa: E402,F401
