"""API polls answered before the app: a conditional GET of `/api/exports/<id>`,
`/api/imports/<id>` or `/api/tasks/<id>` whose ETag has not changed is a 304 from Redis alone,
without Flask, the database or a session (docs/api.md, docs/performance.md §10).

A WSGI middleware in front of the app. Whenever the app answers such a GET with 200 or 304
(conventions.etag), the middleware keeps, under the token's digest and the path, the ETag, the
user, the user's change generation as it was *before* the app read anything (app/events/changes.py),
the Accept-Language the answer was made for, and the answer's headers. The next poll with
that ETag is answered from the entry when, and only when, the app would answer 304 too:
- the generation is still the same: nothing of the user's tasks, exports, imports or tokens
  changed since (a revoked token, a new password, an export deleted, expired or retried
  change it too);
- the entry has not expired: it lives at most ENTRY_TTL, and never past the token's expiry or
  the time the answer itself goes out of date (an import's confirm_by), so that the app still
  runs the poll at least once a minute (the token's last_used_at, a dead worker's task ended
  by `reconciled`);
- the rate limit (RATELIMIT_API) lets the request through: counted with the `limits` library
  in flask-limiter's own storage and key, so both paths share one count; over it, the app
  answers (the 429).
The 304 carries the app's own headers (ETag, Cache-Control, Vary, the security headers) and
the rate limit's, recomputed. Anything else, or anything unexpected (Redis down), goes to the
app untouched: a string prefix check costs every other request nothing to speak of.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import Flask, request
from limits import RateLimitItem, parse_many
from limits.strategies import FixedWindowRateLimiter
from werkzeug.datastructures import Headers
from werkzeug.exceptions import SecurityError
from werkzeug.http import parse_etags, remove_entity_headers
from werkzeug.wsgi import get_host

from app.events import changes
from app.models import utcnow
from app.security.limits import limiter, rate_limit_fields

log = logging.getLogger(__name__)

# The pollable routes and the endpoint each is (flask-limiter's scope for RATELIMIT_API).
POLLED = re.compile(r"/api/(exports|imports|tasks)/[A-Za-z0-9_-]{1,64}")
ENDPOINTS = {"exports": "api.exports.get_export", "imports": "api.imports.get_import",
             "tasks": "api.tasks.get_task"}
ENTRY_PREFIX = "microblog:poll:"  # + token digest + ":" + path
# An entry's life: at most a minute, so the full path runs at least that often for each
# poller; at least half of it, drawn at random, so that pollers who started together (a
# deploy, a batch job) do not all reach the app in the same second again each minute.
ENTRY_TTL = 60
# After Redis failed, the cache is left alone this long (each request would wait for it).
PAUSE_AFTER_ERROR = 5.0
# What the request told the app, and what the app tells the middleware (the WSGI environ).
GENERATION_KEY = "microblog.poll_cache.generation"
OFFER_KEY = "microblog.poll_cache.offer"
# Headers of an answer that are not the same on the next one.
NOT_KEPT = frozenset({"ratelimit", "ratelimit-policy", "set-cookie", "date", "server",
                      "connection", "transfer-encoding", "retry-after", "link", "location"})

# KEYS: the entry. The user's generation and everyone's, read in the same call: the user is in
# the entry (its first line), so their key is named here and not in KEYS (one Redis, never a
# cluster, as app/events/changes.py says).
LOOKUP = f"""
local entry = redis.call('GET', KEYS[1])
if not entry then return nil end
local user = string.match(entry, '^(%d+)')
return {{entry, redis.call('GET', '{changes.PREFIX}' .. user) or '',
        redis.call('GET', '{changes.key(changes.EVERYONE)}') or ''}}
"""


def offer(tag: str, user_id: int, token_digest: str, token_expires_at: datetime | None,
          valid_until: datetime | None = None) -> None:
    """The app's answer to this poll has ETag `tag`: the middleware may keep it (until
    `valid_until` at most, when the answer goes out of date by itself)."""
    deadlines = [d for d in (token_expires_at, valid_until) if d is not None]
    request.environ[OFFER_KEY] = (tag, user_id, token_digest, min(deadlines, default=None))


class PollCache:
    """The middleware (app.wsgi_app = PollCache(app))."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.lookup = app.redis.register_script(LOOKUP)
        self.paused_until = 0.0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/api/") or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        match = POLLED.fullmatch(path)
        secret = _bearer_secret(environ)
        if (match is None or secret is None or environ.get("QUERY_STRING")
                or "HTTP_COOKIE" in environ or time.monotonic() < self.paused_until):
            return self.wsgi_app(environ, start_response)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        entry_key = f"{ENTRY_PREFIX}{digest}:{path}"
        try:
            answer = self._answer(environ, entry_key, ENDPOINTS[match.group(1)])
        except Exception:  # the cache never fails a request: the app answers
            log.warning("Poll cache unavailable; the app answers", exc_info=True)
            self.paused_until = time.monotonic() + PAUSE_AFTER_ERROR
            answer = None
        if answer is not None:
            status, headers = answer
            start_response(status, headers)
            return []
        return self.wsgi_app(environ, self._keeping(environ, start_response, entry_key, digest))

    # ------------------------------------------------------------------ from the cache

    def _answer(self, environ: dict, entry_key: str,
                endpoint: str) -> tuple[str, list[tuple[str, str]]] | None:
        """The 304 when the entry says the app would answer it, else None (and the
        generation seen now, for the app's answer to be kept with)."""
        found = self.lookup(keys=[entry_key])
        if not found:
            return None
        text, user_generation, everyone_generation = (_text(part) for part in found)
        generation = f"{user_generation}/{everyone_generation}"
        environ[GENERATION_KEY] = generation  # read before the app reads anything
        user_id, kept = text.split("\n", 1)
        entry = json.loads(kept)
        if (entry["generation"] != generation
                or entry["language"] != environ.get("HTTP_ACCEPT_LANGUAGE", "")
                or entry["etag"] not in parse_etags(environ.get("HTTP_IF_NONE_MATCH"))
                or not self._host_trusted(environ)):
            return None
        limit_headers = self._count(int(user_id), endpoint)
        if limit_headers is None:
            return None
        return "304 NOT MODIFIED", [*map(tuple, entry["headers"]), *limit_headers]

    def _host_trusted(self, environ: dict) -> bool:
        trusted = self.app.config.get("TRUSTED_HOSTS")
        if not trusted:
            return True
        try:
            get_host(environ, trusted)
        except SecurityError:
            return False  # the app's 400
        return True

    def _count(self, user_id: int, endpoint: str) -> list[tuple[str, str]] | None:
        """Count this request as flask-limiter counts RATELIMIT_API for the app's (same
        storage, same key): the rate-limit headers, or None when it is over a limit (or the
        limits are not as simple as that: the app then decides)."""
        config = self.app.config
        if not config["RATELIMIT_ENABLED"] or not limiter.enabled:
            return []
        if (limiter._storage_dead or config.get("RATELIMIT_DEFAULT")
                or config.get("RATELIMIT_APPLICATION")):
            return None  # counted in memory, or more limits than the API's: the app knows
        items = _limits(config["RATELIMIT_API"])
        strategy = limiter.limiter
        args = ("microblog", f"user:{user_id}", endpoint)
        if isinstance(strategy, FixedWindowRateLimiter) and len(items) == 1:
            window = _hit_one_fixed_window(strategy, items[0], args)
        else:
            window = _hit_each(strategy, items, args)
        if window is None:
            return None
        shown = items[0]  # flask-limiter's header limit: the shortest window, none breached
        reset_time, remaining = window
        return list(rate_limit_fields(shown.amount, shown.get_expiry(), remaining,
                                      int(reset_time + 1)).items())


    # ------------------------------------------------------------------ from the app

    def _keeping(self, environ: dict, start_response: Callable, entry_key: str,
                 digest: str) -> Callable:
        """start_response, keeping the app's answer when it offered it (conventions.etag)."""
        def keep_then_start(status: str, headers: list[tuple[str, str]],
                            exc_info: Any = None) -> Callable:
            offered = environ.get(OFFER_KEY)
            if offered is not None and status[:3] in ("200", "304"):
                try:
                    self._keep(environ, entry_key, digest, offered, headers)
                except Exception:
                    log.warning("Poll cache: answer not kept", exc_info=True)
            return start_response(status, headers, exc_info)
        return keep_then_start

    def _keep(self, environ: dict, entry_key: str, digest: str, offered: tuple,
              headers: list[tuple[str, str]]) -> None:
        tag, user_id, token_digest, deadline = offered
        if token_digest != digest or any(k.lower() == "set-cookie" for k, _ in headers):
            return  # another reading of the header than ours; an answer with a session
        ttl = random.randint(ENTRY_TTL // 2, ENTRY_TTL)
        if deadline is not None:
            ttl = min(ttl, int((deadline - utcnow()).total_seconds()))
        if ttl < 1:
            return
        kept = Headers([(k, v) for k, v in headers if k.lower() not in NOT_KEPT])
        remove_entity_headers(kept)  # what a 304 leaves out (Werkzeug's own 304 does too)
        entry = {"etag": tag, "generation": environ.get(GENERATION_KEY, ""),
                 "language": environ.get("HTTP_ACCEPT_LANGUAGE", ""),
                 "headers": kept.to_wsgi_list()}
        self.app.redis.set(entry_key, f"{user_id}\n{json.dumps(entry)}", ex=ttl)


def _hit_one_fixed_window(strategy: FixedWindowRateLimiter, item: RateLimitItem,
                          args: tuple[str, ...]) -> tuple[float, int] | None:
    """The limit's (reset time, remaining) after this request, as the strategy's `hit` and
    `get_window_stats` would say, from its storage in two round trips instead of three; None
    when over the limit. A refused request counts for nothing (the app, answering the 429,
    counts it again: the window is spent either way)."""
    key = item.key_for(*args)
    count = strategy.storage.incr(key, item.get_expiry())
    if count > item.amount:
        return None
    return strategy.storage.get_expiry(key), item.amount - count


def _hit_each(strategy: Any, items: list[RateLimitItem],
              args: tuple[str, ...]) -> tuple[float, int] | None:
    """Any strategy, any number of limits: asked first (so that a request the app will refuse
    is not counted twice), then counted; the first limit's (reset time, remaining)."""
    if not all(strategy.test(item, *args) for item in items):
        return None
    if not all(strategy.hit(item, *args) for item in items):
        return None
    return tuple(strategy.get_window_stats(items[0], *args))


_parsed: dict[str, list[RateLimitItem]] = {}


def _limits(text: str) -> list[RateLimitItem]:
    """The limits of a setting, in the order flask-limiter checks them (shortest first)."""
    if text not in _parsed:
        _parsed[text] = sorted(parse_many(text))
    return _parsed[text]


def _bearer_secret(environ: dict) -> str | None:
    scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    secret = secret.strip()
    return secret if scheme.lower() == "bearer" and secret else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
