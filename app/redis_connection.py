"""Every Redis client of the app is built here, from REDIS_URL: the web's `app.redis`, the RQ
workers (`rq worker --connection-class app.redis_connection.Redis ...`) and the scripts that
wait for Redis. Besides redis-py's own `redis://`, `rediss://` and `unix://` URLs (handled by
redis-py exactly as before), it accepts a Redis managed by Sentinel:

    redis+sentinel://[[username]:password@]host1:26379,host2:26379/<service_name>[/<db>]
    rediss+sentinel://...    the same, over TLS (to the sentinels and to Redis)

The password is Redis's (sentinels are asked without one). The client asks the sentinels
which server is the primary before each new connection, and reconnects to the new primary
after a failover. A command caught by the failover raises ConnectionError, as it would if a
plain Redis were restarted, except in worker processes (see ride_out_outages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

# No CLIENT SETINFO on each new connection (redis-py >= 5 sends two, each a round trip, and
# from 7 reads its own version from the package metadata every time, about 2 ms; Redis before
# 7.2 answers them with an error): a forked work horse opens new connections for every job.
try:
    from redis.driver_info import DriverInfo  # noqa: F401  (redis-py >= 7: driver_info)

    CLIENT_INFO: dict[str, Any] = {"driver_info": None}
except ImportError:
    CLIENT_INFO = {"lib_name": None, "lib_version": None}

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
# Asking a sentinel must never hang a request or a worker: without the timeouts, a sentinel
# host that drops packets would block the next connection to Redis for good; and redis-py's
# default retries (three, seconds apart) would make every new process wait on a dead sentinel
# before asking the next one, which is there to be asked instead.
SENTINEL_KWARGS_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2, "socket_timeout": 2, "retry": Retry(NoBackoff(), 0)}


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a `redis+sentinel://` URL; raises ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (redis+sentinel://...): {scheme}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    sentinels = [_host_port(item) for item in hosts.split(",") if item.strip()]
    if not sentinels:
        raise ValueError("a redis+sentinel:// URL names at least one sentinel host")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a redis+sentinel:// URL ends in /<service_name> or "
                         "/<service_name>/<db>")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"the database number must be an integer, not {path[1]!r}") from None
    return SentinelUrl(sentinels=sentinels, service_name=path[0], db=db,
                       username=unquote(username) or None, password=unquote(password) or None,
                       ssl=SENTINEL_SCHEMES[scheme])


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # an IPv6 address: [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif item.count(":") == 1:
        host, port = item.split(":")
    else:
        host, port = item, ""
    if not host:
        raise ValueError(f"a sentinel address has no host: {item!r}")
    try:
        return host, int(port) if port else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"a sentinel port must be a number: {item!r}") from None


def redis_from_url(url: str, redis_class: type[redis.Redis] = redis.Redis,
                   **kwargs: Any) -> redis.Redis:
    """A Redis client for `url`: redis-py's from_url, or the primary of a Sentinel-managed
    Redis for a `redis+sentinel://` URL. `kwargs` (socket_timeout, health_check_interval...)
    apply to the connections to Redis; the sentinels get the socket_* ones too."""
    kwargs = CLIENT_INFO | kwargs
    if not is_sentinel_url(url):
        # Not cls.from_url: Redis below overrides it to come here.
        return redis.Redis.from_url.__func__(redis_class, url, **kwargs)
    parsed = parse_sentinel_url(url)
    sentinel_kwargs = dict(SENTINEL_KWARGS_DEFAULTS)
    sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("socket_")})
    if parsed.ssl:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        parsed.service_name, redis_class=redis_class, db=parsed.db, username=parsed.username,
        password=parsed.password, ssl=parsed.ssl, **kwargs)


def ride_out_outages(client: redis.Redis) -> None:
    """Have `client` retry a command that finds no Redis, reconnecting with backoff (0.5,
    1, 2, then 4 s apart, 12 times: about 40 s, more than Sentinel's default 30 s
    down-after-milliseconds plus an election), instead of raising ConnectionError at once.

    For the worker processes: RQ's worker quits on a connection error anywhere but its
    dequeue loop (a heartbeat while a job runs, say), and a job would fail on one in
    save_meta. A retried command after a failover goes to whichever server is the primary
    then. The web keeps failing fast, with a clear message, as before."""
    client.set_retry(Retry(ExponentialBackoff(cap=4, base=0.25), retries=12))


class Redis(redis.Redis):
    """redis.Redis whose from_url also takes Sentinel URLs. RQ's command line builds its
    connection with `<connection class>.from_url(REDIS_URL)`, so `rq worker --connection-class
    app.redis_connection.Redis ...` (or RQ_CONNECTION_CLASS=app.redis_connection.Redis) is
    all a worker needs to follow a failover."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.Redis:
        return redis_from_url(url, redis_class=cls, **kwargs)
