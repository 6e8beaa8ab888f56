"""GET /metrics, for Prometheus. Who may read it (everyone else gets the site's 404 page from
every method, so that the endpoint is not advertised: app/monitoring/__init__.py):

- requests from an address in METRICS_ALLOW (addresses or networks; default loopback only),
  the address being the one the rate limits count (X-Forwarded-For only behind
  TRUSTED_PROXY_COUNT proxies, see app/security/limits.py);
- requests with `Authorization: Bearer <METRICS_TOKEN>` when that is set;
- a signed-in admin.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache

from flask import Response, current_app, request
from flask_login import current_user
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from app.jobs import stats
from app.jobs.metrics import MetricsCollector
from app.jobs.types import TASK_TYPES
from app.monitoring import bp
from app.security.limits import client_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def parse_allow_list(setting: str) -> tuple[Network, ...]:
    """METRICS_ALLOW: addresses or networks separated by commas ("127.0.0.1, 10.0.0.0/8")."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in setting.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"METRICS_ALLOW: {exc}") from exc


def _from_allowed_address() -> bool:
    try:
        address = ipaddress.ip_address(client_address().split("%")[0])
    except ValueError:  # "unknown", or a Unix socket peer
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network
               for network in parse_allow_list(current_app.config["METRICS_ALLOW"]))


def _has_token() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


def may_read_metrics() -> bool:
    return (_from_allowed_address() or _has_token()
            or bool(getattr(current_user, "is_admin", False)))


@bp.route("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    connection = stats.own_connection()  # per scrape: see MetricsCollector
    try:
        registry.register(MetricsCollector(connection, current_app.config["JOB_QUEUES"],
                                           TASK_TYPES))
        # The text format, or OpenMetrics when the scraper asks for it (Prometheus does).
        encode, content_type = choose_encoder(request.headers.get("Accept"))
        body = encode(registry)
    finally:
        connection.close()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
