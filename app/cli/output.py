"""What every `flask ...` command of app/cli/ does the same way: --json, aligned columns, logs
kept off stdout, who ran it, and the user a command names."""

import getpass
import json
import logging
import sys

import click
import sqlalchemy as sa
from flask import current_app

from app import db
from app.jobs.stats import as_json
from app.models import User

json_option = click.option("--json", "as_json", is_flag=True,
                           help="One JSON document on stdout, for scripts.")


def echo_json(value: object) -> None:
    click.echo(json.dumps(as_json(value), indent=2, default=str))


def echo_table(headers: list[str], rows: list[list[object]]) -> None:
    """Columns aligned for a terminal; "(none)" for no rows."""
    if not rows:
        click.echo("(none)")
        return
    cells = [headers, *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def logs_to_stderr() -> None:
    """Keep stdout for the command's output (a --json document a script parses): log
    handlers that write to stdout (LOG_TO_STDOUT) write to stderr in CLI commands."""
    for handler in current_app.logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def actor() -> str:
    """Who runs the command, for the log line of each action."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def user_or_fail(username: str) -> User:
    """The user of that name; a ClickException (exit status 1, the reason on stderr) when
    there is none."""
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user
