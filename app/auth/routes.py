from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import _
from flask_login import current_user, login_required, login_user, logout_user

from app import db
from app.auth import bp
from app.auth.email import send_password_reset_email
from app.auth.forms import (
    ChangePasswordForm,
    LoginForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetPasswordRequestForm,
)
from app.forms import EmptyForm
from app.models import User
from app.security.limits import (
    by_form_field,
    by_user,
    configured,
    count_failed_login,
    counts_failed_logins,
    limiter,
    login_failed,
    refuse_login_attempt,
)


def safe_next(target: str | None) -> str:
    """Only same-site relative paths are followed after login (no open redirect)."""
    if not target or target.startswith("//") or "\\" in target:
        return url_for("main.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/"):
        return url_for("main.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(configured("RATELIMIT_LOGIN"), methods=["POST"],
               deduct_when=counts_failed_logins)
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        # The account's own limits (app/security/limits.py).
        refuse_login_attempt(form.username.data)
        user = db.session.scalar(sa.select(User).where(
            sa.func.lower(User.username) == form.username.data.strip().lower()))
        if user is None or not user.check_password(form.password.data):
            login_failed()
            count_failed_login(form.username.data)
            flash(_("Invalid username or password"), "danger")
            return redirect(url_for("auth.login", next=request.args.get("next")))
        login_user(user.start_session(), remember=form.remember_me.data)
        db.session.commit()
        return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", title=_("Sign In"), form=form)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> ResponseReturnValue:
    """Logging out changes state, so it is a POST with CSRF; GET asks for confirmation."""
    form = EmptyForm()
    if request.method == "GET" and current_user.is_authenticated:
        return render_template("auth/logout.html", title=_("Sign Out"), form=form)
    if form.validate_on_submit() or not current_user.is_authenticated:
        if current_user.is_authenticated:
            # Server-side: a copy of this browser's cookies no longer logs anyone in.
            current_user.end_session()
            db.session.commit()
        logout_user()
    return redirect(url_for("main.index"))


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(configured("RATELIMIT_REGISTER"), methods=["POST"])
def register() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = RegistrationForm()
    if form.validate_on_submit():
        user = User(username=form.username.data, email=form.email.data.strip().lower())
        user.set_password(form.password.data)
        db.session.add(user)
        db.session.commit()
        flash(_("Congratulations, you are now a registered user!"), "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/register.html", title=_("Register"), form=form)


@bp.route("/reset_password_request", methods=["GET", "POST"])
@limiter.limit(configured("RATELIMIT_RESET_PASSWORD"), methods=["POST"])
@limiter.limit(configured("RATELIMIT_RESET_PASSWORD"), methods=["POST"],
               key_func=by_form_field("email"))
def reset_password_request() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = ResetPasswordRequestForm()
    if form.validate_on_submit():
        user = db.session.scalar(
            sa.select(User).where(User.email == form.email.data.strip().lower()))
        if user:
            try:
                send_password_reset_email(user)
            except Exception:
                # Mail down and the job queue too: logged for the operator; the answer stays
                # the one an unknown address gets, so it never tells which addresses exist.
                current_app.logger.exception("password reset mail for user %s failed", user.id)
        flash(_("Check your email for the instructions to reset your password"), "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password_request.html", title=_("Reset Password"),
                           form=form)


@bp.route("/reset_password/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    user = User.verify_reset_password_token(token)
    if not user:
        flash(_("The password reset link is invalid or has expired."), "danger")
        return redirect(url_for("main.index"))
    form = ResetPasswordForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        user.end_other_sessions()  # not logged in here: that is every session
        db.session.commit()
        flash(_("Your password has been reset. Your API tokens, if you had any, are revoked."),
              "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password.html", title=_("Reset Your Password"), form=form)


@bp.route("/change_password", methods=["GET", "POST"])
@login_required
# A stolen session must not become a way to guess the password: wrong ones count as failed
# logins of that user.
@limiter.limit(configured("RATELIMIT_LOGIN"), methods=["POST"], key_func=by_user,
               deduct_when=counts_failed_logins)
def change_password() -> ResponseReturnValue:
    """A new password logs out the user's other browsers; this one stays logged in."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        if not current_user.check_password(form.current_password.data):
            login_failed()
            form.current_password.errors.append(_("Your current password is not correct."))
        else:
            current_user.set_password(form.password.data)
            current_user.end_other_sessions()
            db.session.commit()
            flash(_("Your password has been changed. Your other sessions are logged out and "
                    "your API tokens revoked."), "success")
            return redirect(url_for("main.edit_profile"))
    return render_template("auth/change_password.html", title=_("Change Password"), form=form)
