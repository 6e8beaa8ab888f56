"""What protects the site from its visitors. Here: security headers on every response, the
cookie flags that go with them, and the areas of the site that answer 404 to everyone not
allowed in (hide_area). Beside it: limits.py (rate limits and failed logins), body_limits.py
(request bodies), slots.py (caps on things open at once, counted in Redis).

A small after-request hook rather than Flask-Talisman: what we need is a handful of fixed
headers, Talisman would bring its own redirect-to-HTTPS and cookie handling to switch off, and
a route with a policy of its own (the outbox's sandboxed mail body) simply sets it first."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, Response, abort, request

# Scripts and styles only from our own files: no inline <script>, no on*= handlers, no
# style= attributes (the page's script sets styles through the CSSOM, which CSP allows).
# data: images are Bootstrap's icons (navbar toggler, close button) in its CSS.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
# One year; no includeSubDomains, which would bind hosts this app does not know about.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"


def init_app(app: Flask) -> None:
    """Cookies: SameSite=Lax always (a cross-site form post arrives without the session);
    in production (MICROBLOG_ENV=production) also Secure, so they travel over HTTPS only."""
    production = app.config["MICROBLOG_ENV"] == "production"
    app.config.update(
        SESSION_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=production, REMEMBER_COOKIE_SECURE=production,
    )

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        # setdefault: a view that set a header of its own (the outbox's mail body) keeps it.
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if app.config["MICROBLOG_ENV"] == "production":
            response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
        return response


def hide_area(blueprint: Blueprint, prefix: str, may_enter: Callable[[], bool]) -> None:
    """Everyone for whom `may_enter()` is false gets the site's 404 from `prefix` and every
    URL under it, whatever the method. A blueprint's own before_request is not enough: the
    URL map answers a method a route does not take with 405 (and a missing trailing slash
    with a redirect) before any view's hooks run, which tells a stranger the page exists.
    Those who may enter still get the 405."""
    area = prefix.rstrip("/")

    @blueprint.before_app_request
    def refuse_strangers() -> None:
        path = request.path
        if (path == area or path.startswith(area + "/")) and not may_enter():
            abort(404)
