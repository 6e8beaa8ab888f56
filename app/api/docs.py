"""/api/docs: the API's documentation page, Swagger UI reading /api/openapi.json. Its script
and styles are served from the swagger-ui-bundle-v2 package under /api/docs/assets/ (nothing
comes from a CDN: machines may be offline), and it starts from app/static/js/api-docs.js (no
inline script: the site's Content-Security-Policy forbids it).

A blueprint of its own, beside the API's (not nested in it): the page needs no token."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("api_docs", __name__, url_prefix="/api/docs")

# Swagger UI writes styles into the page as it renders (and its CSS has data: images).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' "
                           "'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
          "favicon-32x32.png")


@bp.route("")
def page() -> Response:
    response = Response(render_template("api/docs.html"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@bp.route("/assets/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:  # only what the page loads: not the package's source maps
        return Response(status=404)
    response = send_from_directory(str(swagger_ui_path), name, max_age=86400)
    return response
