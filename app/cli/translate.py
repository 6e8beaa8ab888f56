"""`flask translate update|compile|init LANG`: the translations in app/translations."""

import os
import subprocess
import sys

import click

BABEL = [sys.executable, "-m", "babel.messages.frontend"]


def _run(args: list[str]) -> None:
    if subprocess.call(BABEL + args):
        raise RuntimeError(f"pybabel {args[0]} failed")


def register(app) -> None:
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
