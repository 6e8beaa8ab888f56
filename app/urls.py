"""Absolute URLs of this site: the one way to build a link that leaves it (mail, exported
files, anything a user follows from outside the page).

They are built from PUBLIC_BASE_URL and never from the request: a request's Host (or
X-Forwarded-Host) header is whatever the client sent, and a password reset mail whose link
followed it would send the token to any host an attacker named. A worker has no request
anyway. The base may carry a path (PUBLIC_BASE_URL=https://example.org/microblog): paths are
joined to it as they are.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app
from flask_babel import gettext as _
from werkzeug.exceptions import SecurityError

# Names a request on the machine itself uses (the Docker and compose health checks, a
# metrics scraper): trusted in production besides the public ones. No link is built from
# them, so a client sending one gains nothing.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def public_url(path: str) -> str:
    """The absolute URL of `path` (starting with "/") under PUBLIC_BASE_URL."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def public_host() -> str:
    """PUBLIC_BASE_URL's host name (no port)."""
    return urlsplit(current_app.config["PUBLIC_BASE_URL"]).hostname or ""


def public_url_for(endpoint: str, **values) -> str:
    """url_for(endpoint, **values) as an absolute URL under PUBLIC_BASE_URL. Built without
    the request's script root, which PUBLIC_BASE_URL's own path already stands for. Only
    where the app has its URL map (the web; a worker's app has none)."""
    adapter = current_app.url_map.bind("localhost", script_name="/")
    return public_url(adapter.build(endpoint, values))


def trusted_hosts(public_base_url: str, extra: list[str]) -> list[str]:
    """The Host names a production web answers (Flask's TRUSTED_HOSTS): PUBLIC_BASE_URL's,
    the TRUSTED_HOSTS setting's, and the loopback names."""
    names = [urlsplit(public_base_url).hostname or "", *extra, *LOOPBACK_HOSTS]
    return list(dict.fromkeys(name for name in names if name))


def register(app: Flask) -> None:
    """The Jinja globals mail templates build their links with; in production, the Host
    names the web answers (a request for any other is refused with 400 by Flask)."""
    app.jinja_env.globals.update(public_url=public_url, public_url_for=public_url_for)
    if app.config["MICROBLOG_ENV"] == "production" and app.config.get("TRUSTED_HOSTS") is None:
        app.config["TRUSTED_HOSTS"] = trusted_hosts(app.config["PUBLIC_BASE_URL"],
                                                    app.config["EXTRA_TRUSTED_HOSTS"])
        app.register_error_handler(SecurityError, unknown_host)


def unknown_host(error: SecurityError) -> Response:
    """The 400 for a request to a host name that is not the site's: plain text, since the
    site's pages cannot be built for it (every URL of the request's own would need its
    host)."""
    return Response(_("This site does not answer to that host name."), 400,
                    mimetype="text/plain")
