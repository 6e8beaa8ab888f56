"""`flask users ...`: the admin role. `promote` and `demote` decide it for good (over
ADMINS); `list` shows who is an admin and why. Exit codes as in app/cli/tasks.py."""

from __future__ import annotations

import logging

import click
import sqlalchemy as sa

from app import db
from app.cli.output import (
    actor,
    echo_json,
    echo_table,
    json_option,
    logs_to_stderr,
    user_or_fail,
)
from app.models import User

log = logging.getLogger(__name__)


def _why(user: User) -> str:
    if user.admin is True:
        return "promoted"
    if user.admin is False:
        return "demoted"
    return "ADMINS" if user.is_admin else ""


def _set_admin(username: str, admin: bool, as_json: bool) -> None:
    user = user_or_fail(username)
    user.admin = admin
    db.session.commit()
    log.info("%s %s user %s", actor(), "promoted" if admin else "demoted", user.username)
    if as_json:
        echo_json({"username": user.username, "admin": user.is_admin})
    else:
        click.echo(f"{user.username} is {'now' if admin else 'no longer'} an admin.")


def register(app) -> None:
    @app.cli.group()
    def users():
        """User commands: the admin role."""
        logs_to_stderr()

    @users.command()
    @click.argument("username")
    @json_option
    def promote(username, as_json):
        """Make USERNAME an admin (whatever ADMINS says)."""
        _set_admin(username, True, as_json)

    @users.command()
    @click.argument("username")
    @json_option
    def demote(username, as_json):
        """Make USERNAME not an admin (even if ADMINS lists their address)."""
        _set_admin(username, False, as_json)

    @users.command("list")
    @click.option("--admins", is_flag=True, help="Only admins.")
    @json_option
    def list_users(admins, as_json):
        """Users, with whether each is an admin and why (promoted, demoted, ADMINS)."""
        rows = [{"username": u.username, "email": u.email, "admin": u.is_admin, "why": _why(u)}
                for u in db.session.scalars(sa.select(User).order_by(User.username))
                if u.is_admin or not admins]
        if as_json:
            echo_json(rows)
            return
        echo_table(["USERNAME", "EMAIL", "ADMIN", "WHY"],
                   [[r["username"], r["email"], "yes" if r["admin"] else "no", r["why"]]
                    for r in rows])
