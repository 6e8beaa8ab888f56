"""The token API under /api/ (docs/api.md): one module per resource, each a nested
flask-smorest blueprint of `bp`; the conventions they share (app/api/conventions.py,
idempotency.py), their authentication (auth.py) and their errors (problems.py). The OpenAPI
3.1 document is generated from these modules at /api/openapi.json; /api/docs shows it
(docs.py)."""

from flask_smorest import Blueprint

from app.api import conventions
from app.api.auth import by_api_user
from app.security.limits import configured, limiter

bp = Blueprint("api", __name__, url_prefix="/api")
conventions.install(bp)
# Every route, per user (per address for requests without a valid token); the routes that
# start work add the page's own limits (RATELIMIT_EXPORT, ...) to it.
limiter.limit(configured("RATELIMIT_API"), key_func=by_api_user)(bp)

from app.api import events, exports, imports, posts, tasks, tokens, users  # noqa: E402,F401
