"""/settings/tokens: a member's personal access tokens for the API (app/api/): create one with a
name, an expiry and a scope, see it once, list them with when each was last used, revoke them
one by one.

A new token's secret is shown once, on the page the creation redirects to: it is handed over
through Redis (kept there for a few minutes at most, read and deleted in one command) under a
key of this login session, so that a reload, the back button or another browser of the same
user shows it no more. The database keeps only its SHA-256 (ApiToken). Another user's token
is a 404, like one that never existed. A new password revokes every token (User.set_password).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import _
from flask_login import current_user, login_required

from app import db
from app.forms import EmptyForm
from app.models import ApiToken, User, UserSession, utcnow
from app.security.limits import by_user, configured, limiter
from app.settings import bp
from app.settings.forms import EXPIRY_DAYS, NewTokenForm

log = logging.getLogger(__name__)

MAX_TOKENS_PER_USER = ApiToken.MAX_LIVE_PER_USER
# How long a new token's secret waits in Redis for the page that shows it (the redirect).
HANDOVER_SECONDS = 600


def tokens_of(user: User) -> list[ApiToken]:
    """The user's tokens, the newest first, expired ones included (the page says so)."""
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def _handover_key() -> str:
    # The login session's digest, not the user's id: only the browser that made the token
    # sees it. The session token itself (a credential) stays out of Redis.
    return "microblog:new-api-token:" + UserSession.digest(current_user.session_token)


def _hand_over(token: ApiToken, secret: str) -> None:
    current_app.redis.set(_handover_key(), json.dumps({"id": token.id, "secret": secret}),
                          ex=HANDOVER_SECONDS)


def _take_handed_over() -> tuple[ApiToken, str] | None:
    """The token made by this session's last creation and its secret, once: the first read
    deletes it. None when there is none, it was revoked since, or Redis cannot be reached."""
    try:
        raw = current_app.redis.getdel(_handover_key())
    except Exception:
        log.warning("new token handover unavailable (Redis)", exc_info=True)
        return None
    if raw is None:
        return None
    data = json.loads(raw)
    token = db.session.get(ApiToken, data["id"])
    if token is None or token.user_id != current_user.id:
        return None
    return token, data["secret"]


def create_token(user: User, form: NewTokenForm) -> bool:
    """Issue the token the form describes and hand its secret to the next page; False (with
    a flash saying why, nothing kept) when the user has too many or Redis is down."""
    if (refusal := ApiToken.cap_reached(user)) is not None:
        flash(refusal, "warning")
        return False
    days = EXPIRY_DAYS[form.expires.data]
    token, secret = ApiToken.issue(user, form.name.data, form.scope.data,
                                   timedelta(days=days) if days else None)
    db.session.commit()
    try:
        _hand_over(token, secret)
    except Exception:
        # A token nobody can ever see is of no use: take it back.
        log.warning("API token %s of user %s not handed over (Redis); deleted", token.id,
                    user.id, exc_info=True)
        db.session.delete(token)
        db.session.commit()
        flash(_("The token could not be created just now. Please try again in a moment."),
              "danger")
        return False
    log.info("API token %s (%s) created by user %s", token.id, token.scope, user.id)
    return True


@bp.route("/settings/tokens", methods=["GET", "POST"])
@login_required
@limiter.limit(configured("RATELIMIT_API_TOKENS"), methods=["POST"], key_func=by_user)
def tokens() -> ResponseReturnValue:
    form = NewTokenForm()
    if form.validate_on_submit():
        if create_token(current_user, form):
            return redirect(url_for("settings.tokens"))
    new = _take_handed_over() if not form.is_submitted() else None
    response = current_app.make_response(render_template(
        "settings/tokens.html", title=_("API tokens"), form=form, tokens=tokens_of(current_user),
        new_token=new[0] if new else None, new_secret=new[1] if new else None,
        revoke_form=EmptyForm(), now=utcnow(), max_tokens=MAX_TOKENS_PER_USER))
    # The page may hold a secret: no cache (browser or proxy) keeps a copy of it.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/settings/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id: int) -> ResponseReturnValue:
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    if not EmptyForm().validate_on_submit():  # CSRFProtect refused a bad token already
        abort(400)
    name = token.name
    db.session.delete(token)
    db.session.commit()
    log.info("API token %s revoked by user %s", token_id, current_user.id)
    flash(_('The token "%(name)s" was revoked: programs that use it are refused from now on.',
            name=name), "success")
    return redirect(url_for("settings.tokens"))
