from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import _
from flask_login import current_user, login_user, logout_user

from app import db
from app.auth import bp
from app.auth.email import send_password_reset_email
from app.auth.forms import (
    LoginForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetPasswordRequestForm,
)
from app.main.forms import EmptyForm
from app.models import User


def safe_next(target: str | None) -> str:
    """Only same-site relative paths are followed after login (no open redirect)."""
    if not target or target.startswith("//") or "\\" in target:
        return url_for("main.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/"):
        return url_for("main.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(sa.select(User).where(
            sa.func.lower(User.username) == form.username.data.strip().lower()))
        if user is None or not user.check_password(form.password.data):
            flash(_("Invalid username or password"), "danger")
            return redirect(url_for("auth.login", next=request.args.get("next")))
        login_user(user, remember=form.remember_me.data)
        return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", title=_("Sign In"), form=form)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """Logging out changes state, so it is a POST with CSRF; GET asks for confirmation."""
    form = EmptyForm()
    if request.method == "GET" and current_user.is_authenticated:
        return render_template("auth/logout.html", title=_("Sign Out"), form=form)
    if form.validate_on_submit() or not current_user.is_authenticated:
        logout_user()
    return redirect(url_for("main.index"))


@bp.route("/register", methods=["GET", "POST"])
def register():
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
def reset_password_request():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = ResetPasswordRequestForm()
    if form.validate_on_submit():
        user = db.session.scalar(
            sa.select(User).where(User.email == form.email.data.strip().lower()))
        if user:
            send_password_reset_email(user)
        flash(_("Check your email for the instructions to reset your password"), "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password_request.html", title=_("Reset Password"),
                           form=form)


@bp.route("/reset_password/<token>", methods=["GET", "POST"])
def reset_password(token):
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    user = User.verify_reset_password_token(token)
    if not user:
        flash(_("The password reset link is invalid or has expired."), "danger")
        return redirect(url_for("main.index"))
    form = ResetPasswordForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        db.session.commit()
        flash(_("Your password has been reset."), "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password.html", title=_("Reset Your Password"), form=form)
