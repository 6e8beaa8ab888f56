"""Flask CLI commands: `flask translate ...` here; `flask tasks ...` (app/cli_tasks.py) and
`flask users ...` (app/cli_users.py) in modules of their own; and their output helpers."""

import getpass
import json
import logging
import os
import subprocess
import sys

import click
from flask import current_app

BABEL = [sys.executable, "-m", "babel.messages.frontend"]


def _run(args: list[str]) -> None:
    if subprocess.call(BABEL + args):
        raise RuntimeError(f"pybabel {args[0]} failed")


def register(app):
    @app.cli.group()
    def translate():
        """Translation and localization commands."""

    @translate.command()
    def update():
        """Extract the strings and update all languages."""
        _run(["extract", "-F", "babel.cfg", "-k", "_l", "-o", "messages.pot", "."])
        _run(["update", "-i", "messages.pot", "-d", "app/translations"])
        os.remove("messages.pot")

    @translate.command()
    def compile():
        """Compile all languages."""
        _run(["compile", "-d", "app/translations"])

    @translate.command()
    @click.argument("lang")
    def init(lang):
        """Initialize a new language."""
        _run(["extract", "-F", "babel.cfg", "-k", "_l", "-o", "messages.pot", "."])
        _run(["init", "-i", "messages.pot", "-d", "app/translations", "-l", lang])
        os.remove("messages.pot")

    from app import cli_tasks, cli_users

    cli_tasks.register(app)
    cli_users.register(app)


# --------------------------------------------------------------------------- output helpers

json_option = click.option("--json", "as_json", is_flag=True,
                           help="One JSON document on stdout, for scripts.")


def echo_json(value: object) -> None:
    from app.job_stats import as_json

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
