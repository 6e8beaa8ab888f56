"""/api/tokens, the tutorial's (chapter 23): HTTP Basic with a username and password gives a
token (an ApiToken of scope "read write", valid TOKEN_LIFETIME); DELETE revokes the token it
is sent with. Rate-limited like the login form, with the same per-account limits
(app/security/limits.py). Longer-lived tokens, and read-only ones, are made on the settings
page."""

from __future__ import annotations

from datetime import timedelta

import marshmallow as ma
import sqlalchemy as sa
from flask import request
from flask_babel import _

from app import db
from app.api import auth, bp
from app.api.conventions import Resource, Timestamp, password_route
from app.api.problems import ApiProblem
from app.models import ApiToken, User, utcnow
from app.security.limits import (
    configured,
    count_failed_login,
    counts_failed_logins,
    limiter,
    login_failed,
    refuse_login_attempt,
)

TOKEN_LIFETIME = timedelta(hours=1)
TOKEN_NAME = "POST /api/tokens"

blp = Resource("tokens", __name__, url_prefix="/tokens",
                description="Tokens for a username and password (HTTP Basic).")


class NewTokenSchema(ma.Schema):
    token = ma.fields.String(required=True, metadata={
        "description": "send it as `Authorization: Bearer <token>`; shown only now"})
    scope = ma.fields.String(required=True)
    expires_at = Timestamp(required=True)


def _password_user() -> User:
    credentials = request.authorization
    challenge = {"WWW-Authenticate": f"Basic {auth.REALM}"}
    if credentials is None or credentials.type != "basic" or not credentials.username:
        raise ApiProblem(401, "unauthorized", _(
            "Send your username and password with HTTP Basic authentication."),
            headers=challenge)
    username, password = credentials.username, credentials.password or ""
    refuse_login_attempt(username)  # the account's own limits, as the login form's
    user = db.session.scalar(sa.select(User).where(
        sa.func.lower(User.username) == username.strip().lower()))
    if user is None or not user.check_password(password):
        login_failed()
        count_failed_login(username)
        raise ApiProblem(401, "invalid-credentials", _("Invalid username or password"),
                         headers=challenge)
    return user


@blp.route("", methods=["POST"])
@password_route
@limiter.limit(configured("RATELIMIT_LOGIN"), deduct_when=counts_failed_logins,
               override_defaults=False)
@blp.response(200, NewTokenSchema)
@blp.doc(security=[{"password": []}],
         responses={"409": {"$ref": "#/components/responses/CONFLICT"}})
def new_token() -> dict:
    """A token for the username and password sent with HTTP Basic

    Valid for an hour, scope "read write". The secret is in this answer only. Refused (409)
    while the account holds as many live tokens as it may (50, with the settings page's)."""
    user = _password_user()
    # Tokens of this kind that have expired are of no use to anyone: none pile up.
    db.session.execute(sa.delete(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.name == TOKEN_NAME,
        ApiToken.expires_at <= utcnow()).execution_options(changes_owner=user.id))
    if (refusal := ApiToken.cap_reached(user)) is not None:
        db.session.commit()
        raise ApiProblem(409, "too-many-tokens", refusal)
    token, secret = ApiToken.issue(user, TOKEN_NAME, "read write", TOKEN_LIFETIME)
    db.session.commit()
    return {"token": secret, "scope": token.scope, "expires_at": token.expires_at}


@blp.route("", methods=["DELETE"])
@password_route  # any live token may revoke itself, a read-only one too
@blp.response(204)
def revoke_token() -> None:
    """Revoke the token this request is sent with"""
    token = auth.require_token_of_any_scope()
    db.session.delete(token)
    db.session.commit()


bp.register_blueprint(blp)
