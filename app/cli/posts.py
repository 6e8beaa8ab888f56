"""`flask posts import FILE --user NAME [--yes]`: bring an archive into an account from a
terminal, for an operator migrating accounts. The same code as the /imports pages
(app/imports/centre.py, then importer.py: the preview, then the import in batches, each
post exactly once), run in this process: no worker is needed, and no mail is sent. The
import appears in the user's history (/imports). Exit codes as in app/cli/tasks.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import click
from flask import current_app

from app import db
from app.cli.output import actor, logs_to_stderr, user_or_fail
from app.imports import centre, importer
from app.imports.readers import ArchiveRefused, Limits, open_archive
from app.models import Import, User

log = logging.getLogger(__name__)


def _echo_preview(preview: dict) -> None:
    click.echo(f"Archive: {preview['kind']}"
               + (f" of @{preview['account']}" if preview.get("account") else ""))
    click.echo(f"Posts found: {preview['posts']:,}"
               + (f" ({preview['first']} to {preview['last']})" if preview["posts"] else ""))
    click.echo(f"Already on the account: {preview['already']:,}")
    for reason, count in sorted(preview["skipped"].items()):
        click.echo(f"Skipped ({reason}): {count:,}")
    if preview["broken"]:
        click.echo(f"Broken (will fail): {preview['broken']:,}")
    if preview["follows"]:
        click.echo(f"Accounts followed in the archive: {preview['follows']:,}")
    for warning in preview["warnings"]:
        click.echo(f"Warning: {warning}")


def _progress_printer(total: int) -> Callable[[int], None]:
    """A line every tenth of the way (every batch when the total is not known)."""
    step = max(total // 10, 1)
    shown = [0]

    def show(done: int) -> None:
        if done - shown[0] >= step or done >= total:
            shown[0] = done
            click.echo(f"{done:,} of {total:,} items")

    return show


def import_archive(path: str, user: User, yes: bool) -> Import | None:
    """Preview the archive at `path` for `user`, ask (unless `yes`), import. Returns the
    import, or None when the operator said no (the upload is then discarded)."""
    if (user.get_task_in_progress(centre.TASK_IMPORT)
            or user.get_task_in_progress(centre.TASK_PREVIEW)):
        raise click.ClickException(f"{user.username} has an import in progress; try again "
                                   "when it has ended")
    with open(path, "rb") as stream:
        try:
            imp = centre.store_upload(user, os.path.basename(path), stream)
        except centre.ImportRefused as exc:
            raise click.ClickException(str(exc)) from None
    db.session.add(imp)
    db.session.commit()
    limits = Limits.from_config(current_app.config)
    try:
        with centre.local_archive(imp) as local, open_archive(local, limits) as archive:
            preview = importer.build_preview(imp, archive)
            kind = archive.kind
    except ArchiveRefused as exc:
        centre.remove_file(imp)
        db.session.delete(imp)
        db.session.commit()
        raise click.ClickException(f"not imported: {exc}") from None
    centre.record_preview(imp, preview, kind)
    _echo_preview(preview)
    if not yes and not click.confirm(f"Import these posts into @{user.username}?"):
        centre.discard(imp)
        click.echo("Nothing was imported.")
        return None
    centre.prepare_confirm(imp)
    db.session.commit()
    log.info("%s imports %s into user %s (import %s)", actor(), imp.filename, user.username,
             imp.id)
    with centre.local_archive(imp) as local, open_archive(local, limits) as archive:
        importer.run_import(imp, archive, _progress_printer(preview["items"]))
    centre.record_finished(imp)
    return imp


def _echo_summary(imp: Import) -> None:
    result = importer.summary(imp)
    click.echo(f"Imported: {result['imported']:,}")
    for reason, count in sorted(result["skipped"].items()):
        click.echo(f"Skipped ({reason}): {count:,}")
    click.echo(f"Failed: {result['failed']:,}")
    click.echo(f"Followed: {result['followed']:,}; not found here: {result['not_found']:,}")
    click.echo(f"Import {imp.id}: /imports/{imp.id}")


def register(app) -> None:
    @app.cli.group()
    def posts():
        """Post commands: import an archive."""
        logs_to_stderr()

    @posts.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
    @click.option("--user", "username", required=True, metavar="NAME",
                  help="The account to import into.")
    @click.option("--yes", is_flag=True, help="Import without asking, after the preview.")
    def import_command(file, username, yes):
        """Import the archive FILE (ours, Mastodon's or X's) into the account NAME: the
        preview, then (once confirmed) every post not already there, exactly once."""
        user = user_or_fail(username)
        imp = import_archive(file, user, yes)
        if imp is not None:
            _echo_summary(imp)
