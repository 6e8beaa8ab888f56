"""Rate limits (Flask-Limiter), counted in the app's Redis so that every web process shares them.

Logged-in actions are counted per user (fifty users behind one NAT do not limit each other);
anonymous ones per client address, and the reset form also per address typed, so that
spreading a guessing attack over many addresses does not help either. Failed logins count per
address, per account and address, and per account, where the account's count never refuses an
address that has not failed for it (refuse_login_attempt). Each limit is a string from the
environment (config.py: RATELIMIT_LOGIN, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from flask_login import current_user
from limits import RateLimitItem, parse_many
from werkzeug.exceptions import TooManyRequests


def limits_storage(redis_url: str) -> tuple[str, dict]:
    """The `limits` storage URI and options for the app's REDIS_URL.

    redis:// and rediss:// are the same for both; `unix:///path/redis.sock` (the embedded
    Redis) is `redis+unix:///path/redis.sock` to limits. A Sentinel URL
    `redis+sentinel://host:port[,host:port]/<service_name>[/db]` is limits' own scheme, except
    the database: limits takes the whole path as the service name, so the db goes in the
    options. The Redis connection times out fast: a limiter waiting on a dead Redis would
    hold the request (its errors are swallowed, see init_limiter)."""
    options: dict = {"socket_connect_timeout": 2, "socket_timeout": 2}
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return "redis+" + redis_url, options
    if parts.scheme == "redis+sentinel":
        service, _, db = parts.path.strip("/").partition("/")
        if db:
            options["db"] = int(db)
        # Writes and reads both go to the primary: a replica may lag behind the count.
        options["use_replicas"] = False
        options["sentinel_kwargs"] = {"socket_connect_timeout": 2, "socket_timeout": 2}
        return urlunsplit(parts._replace(path="/" + service)), options
    return redis_url, options


def client_address() -> str:
    """The client's address. Behind reverse proxies (TRUSTED_PROXY_COUNT of them, e.g. 1 for
    nginx) it is the one the nearest trusted proxy saw in X-Forwarded-For; without that
    setting a client could pick its own address with the header and so its own bucket."""
    hops = current_app.config["TRUSTED_PROXY_COUNT"]
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
    if hops and len(forwarded) >= hops and forwarded[-hops]:
        return forwarded[-hops]
    return request.remote_addr or "unknown"


def by_address() -> str:
    return "ip:" + client_address()


def by_user() -> str:
    """Logged-in actions count per account, whatever address they come from."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return by_address()


def by_form_field(name: str) -> Callable[[], str]:
    """Counts per value typed in a form field (username, email), case-insensitively."""
    def key() -> str:
        return f"{name}:" + (request.form.get(name) or "").strip().lower()[:254]
    return key


def configured(name: str) -> Callable[[], str]:
    """The limit string from the config, read per request (tests change it per app)."""
    return lambda: current_app.config[name]


def login_failed() -> None:
    """Tells the login limits to count this request (successful logins cost nothing)."""
    g.login_failed = True


def counts_failed_logins(response: Response) -> bool:
    return bool(g.get("login_failed"))


class AppLimiter(Limiter):
    def init_app(self, app: Flask) -> None:
        # One module-level limiter serves the app of this process (tests create many apps in
        # turn): a new app starts by trusting its own storage again.
        self._storage_dead = False
        super().init_app(app)


# When Redis cannot be reached the limiter counts in this process's memory and logs it
# (in_memory_fallback) and never fails the request (swallow_errors): limits get looser for
# the time Redis is down, pages keep working.
limiter = AppLimiter(key_func=by_address, swallow_errors=True, in_memory_fallback_enabled=True,
                     key_prefix="microblog", strategy="fixed-window")


def init_limiter(app: Flask) -> None:
    uri, options = limits_storage(app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_URI", uri)
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
    limiter.init_app(app)


class LoginRefused(TooManyRequests):
    """A login attempt refused by the account's own limits, and for how long."""

    def __init__(self, seconds: int) -> None:
        super().__init__()
        self.seconds = seconds


def _login_windows() -> list[RateLimitItem]:
    return parse_many(current_app.config["RATELIMIT_LOGIN"])


def _login_buckets(username: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The storage keys of the failed logins at `username`: from this address, from any."""
    name = username.strip().lower()[:254]
    return (("microblog", "login-failures", f"{name}@{client_address()}"),
            ("microblog", "login-failures", name))


def refuse_login_attempt(username: str) -> None:
    """Raise LoginRefused (429) when this attempt at `username` is over the account's limits.

    Failed logins (RATELIMIT_LOGIN) at one account from one address: that address is refused
    for the account, whatever the password. Failed logins at one account from any address:
    once they reach the limit, an address that has failed for the account in the window is
    refused, and one that has not still gets its attempt. So wrong passwords from one place
    never lock the owner out of their account from another; a guesser spread over many
    addresses gets one guess per address while the account is under attack, each address's
    own budget (per address, every account) bounding the rest. The route's per-address limit
    comes on top. If the limits' storage fails, the attempt goes ahead (pages keep working)."""
    if not limiter.enabled:
        return
    here, anywhere = _login_buckets(username)
    try:
        strategy = limiter.limiter
        for window in _login_windows():
            failed_here = strategy.get_window_stats(window, *here).remaining < window.amount
            if not strategy.test(window, *here) or (
                    failed_here and not strategy.test(window, *anywhere)):
                reset_at = max(strategy.get_window_stats(window, *key).reset_time
                               for key in (here, anywhere))
                raise LoginRefused(max(1, int(reset_at - time.time())))
    except LoginRefused:
        raise
    except Exception:
        current_app.logger.exception("login limits unavailable; attempt not limited")


def count_failed_login(username: str) -> None:
    """Counts a failed login at `username` in the buckets refuse_login_attempt reads."""
    if not limiter.enabled:
        return
    try:
        for window in _login_windows():
            for key in _login_buckets(username):
                limiter.limiter.hit(window, *key)
    except Exception:
        current_app.logger.exception("login limits unavailable; failure not counted")


def retry_after(error: Exception) -> int:
    """Seconds until the limit that was hit lets a request through again."""
    if isinstance(error, LoginRefused):
        return error.seconds
    try:
        return max(1, int(limiter.current_limit.reset_at - time.time()))
    except Exception:  # storage gone since, or a bare abort(429): the window is an upper bound
        limit = getattr(error, "limit", None)
        return int(limit.limit.get_expiry()) if limit else 60


def rate_limit_fields(quota: int, window: int, remaining: int, reset_at: float) -> dict:
    """The two headers, for a limit of `quota` a `window` (seconds) with `remaining` left
    until `reset_at` (a Unix time). The API's answers (app/api/conventions.py) and its poll cache
    (app/api/poll_cache.py) send them."""
    reset = max(0, int(reset_at - time.time()))
    return {"RateLimit-Policy": f'"default";q={quota};w={window}',
            "RateLimit": f'"default";r={max(0, remaining)};t={reset}'}
