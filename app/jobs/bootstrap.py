"""What a worker process needs before it runs anything: its Flask app, and what a lost Redis
looks like. The task functions (app/tasks.py), the lifecycle (app/jobs/lifecycle.py) and the
worker class (app/jobs/worker.py) all build on it, so it imports nothing of ours above the app
factory: with it below them, those three import each other one way only (worker -> tasks ->
lifecycle -> here).
"""

from __future__ import annotations

import os
from functools import cache

import redis
from flask import Flask

from app import create_app, db
from app.redis_connection import ride_out_outages

# What a restart or a network blip of Redis looks like to a client.
REDIS_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@cache
def get_worker_app() -> Flask:
    """The Flask app of this worker process, created once: without the `flask` commands and
    without the web's blueprints and extensions (see create_app)."""
    app = create_app(commands=False, web=False)
    ride_out_outages(app.redis)  # the job's own writes (mail claims) in the work horse
    with app.app_context():
        engine = db.engine
    # A forked child must not reuse the parent's pooled database connections.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return app
