"""The worker's part of an import: the preview (the archive read, nothing written to the
account) and the import itself, in batches, each post exactly once, then the follows; and
the one mail that says it is done. Knows nothing of the job system: app/tasks.py runs these
with the task's progress report, which raises (TaskNotActive) when the user cancels.

Exactly once. Each batch of IMPORT_BATCH_SIZE items is ONE transaction: its new posts, the
problems of its broken items, and the Import's position (the number of the last item dealt
with) and counts. A worker killed mid-batch loses the whole batch and nothing else; its
retry reads the archive again and goes on after `position`. Whatever happens between, the
database refuses a second copy of a post: (user_id, origin_key) is unique (identity.py),
and the insert skips a row that would break that (on conflict do nothing) rather than fail.
The counts come from the check made in the same transaction just before the insert (which
keys the account has): with one import at a time per user, nothing else adds imported posts
to the account in between.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import TypeVar

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import gettext as _
from flask_babel import ngettext

from app import db
from app.email import send_email_once
from app.imports import centre
from app.imports.identity import origin_key, to_the_second
from app.imports.readers import SKIP_REASONS, Archive, ArchivePost, BrokenItem, Item, SkippedItem
from app.models import Import, ImportProblem, Post, PostOrigin, User, followers
from app.urls import public_url

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"  # a skip reason: already on the account (or twice in one batch)
FAILED = "failed"  # ImportProblem.outcome: a post that could not be imported
NOT_FOUND = "not_found"  # ImportProblem.outcome: a followed account that is not here
NOT_FOUND_REASON = "no account with this username on this site"
SAMPLES = 5
SAMPLE_CHARS = 500  # a sample is for recognising the archive: a long post is cut, with "…"
FOLLOWS_BATCH = 500

T = TypeVar("T")


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, max(size, 1))):
        yield batch

# --------------------------------------------------------------------------- the preview

def build_preview(imp: Import, archive: Archive,
                  on_progress: Callable[[int], None] | None = None) -> dict:
    """Read the whole archive and say what importing it would do; write nothing. Reports
    the items read after each batch (on_progress may raise to stop it). The warnings are in
    English (centre.preview_warnings translates them)."""
    user = imp.user
    batch_size = current_app.config["IMPORT_BATCH_SIZE"]
    posts = already = broken = read = 0
    skipped: Counter[str] = Counter()
    first: datetime | None = None
    last: datetime | None = None
    samples: list[dict] = []
    for batch in batches(archive.items(), batch_size):
        found = []
        for item in batch:
            if isinstance(item, ArchivePost):
                found.append(item)
            elif isinstance(item, SkippedItem):
                skipped[item.reason] += 1
            else:
                broken += 1
        for post in found:
            first = post.timestamp if first is None else min(first, post.timestamp)
            last = post.timestamp if last is None else max(last, post.timestamp)
            if len(samples) < SAMPLES:
                samples.append({"body": _sample(post.body), "timestamp": _iso(post.timestamp)})
        posts += len(found)
        already += sort_out(user.id, archive.origin, found).duplicates
        read += len(batch)
        if on_progress is not None:
            on_progress(read)
    db.session.rollback()  # the reads' transaction: nothing was written
    follows = sum(1 for _ in archive.following())
    warning = centre.other_account_warning(user, archive.account)
    return {
        "kind": archive.kind, "account": archive.account, "posts": posts,
        "first": _iso(first), "last": _iso(last), "already": already,
        "skipped": dict(skipped), "broken": broken, "items": read, "samples": samples,
        "warnings": [warning] if warning else [], "follows": follows,
    }


def _sample(body: str) -> str:
    return body if len(body) <= SAMPLE_CHARS else body[:SAMPLE_CHARS].rstrip() + "…"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


# --------------------------------------------------------------------------- what is new

@dataclass
class SortedOut:
    new: list[tuple[str, ArchivePost]]  # (origin_key, post), in the archive's order
    duplicates: int


def sort_out(user_id: int, origin: str, posts: list[ArchivePost],
             by_text: bool = True) -> SortedOut:
    """Which of a batch's posts the account does not have yet: not twice in the batch, no
    post of the account with the same identity key, and for our own archives (unless
    `by_text` is False: see texts_to_compare) no post of the account with the same text in
    the same second (a post written here, or brought from elsewhere, then exported and
    brought back)."""
    keyed: dict[str, ArchivePost] = {}
    duplicates = 0
    for post in posts:
        key = origin_key(origin, post)
        if key in keyed:
            duplicates += 1
        else:
            keyed[key] = post
    if keyed:
        for key in db.session.scalars(sa.select(Post.origin_key).where(
                Post.user_id == user_id, Post.origin_key.in_(list(keyed)))):
            if keyed.pop(key, None) is not None:
                duplicates += 1
    if keyed and by_text and origin == PostOrigin.MICROBLOG:
        here = _same_second_and_text(user_id, list(keyed.values()))
        for key, post in list(keyed.items()):
            if (to_the_second(post.timestamp), post.body) in here:
                del keyed[key]
                duplicates += 1
    return SortedOut(list(keyed.items()), duplicates)


def _same_second_and_text(user_id: int, posts: list[ArchivePost]) -> set[tuple[datetime, str]]:
    stamps = [to_the_second(post.timestamp) for post in posts]
    rows = db.session.execute(sa.select(Post.timestamp, Post.body).where(
        Post.user_id == user_id, Post.timestamp >= min(stamps),
        Post.timestamp < max(stamps) + timedelta(seconds=1),
        Post.body.in_({post.body for post in posts})))
    return {(to_the_second(timestamp), body) for timestamp, body in rows}


def texts_to_compare(imp: Import, origin: str) -> bool:
    """Whether an import of one of our own archives must compare texts (sort_out's by_text):
    only when the account has, within the archive's dates (its preview's), a post that was
    not brought from one of our archives. A post brought from one has the identity key the
    import compares anyway; and one written here meanwhile is dated now, never in an
    archive's past. For an import into a new account, one query instead of one a batch."""
    if origin != PostOrigin.MICROBLOG:
        return False
    preview = imp.preview() or {}
    try:
        first = datetime.fromisoformat(preview["first"].removesuffix("Z"))
        last = datetime.fromisoformat(preview["last"].removesuffix("Z"))
    except (KeyError, AttributeError, ValueError):
        return True  # no dates to go by: compare every batch
    return db.session.scalar(sa.select(sa.exists().where(
        Post.user_id == imp.user_id, Post.timestamp >= first,
        Post.timestamp < last + timedelta(seconds=1),
        sa.or_(Post.origin.is_(None), Post.origin != PostOrigin.MICROBLOG)))) is True


# --------------------------------------------------------------------------- the import

def insert_ignoring_duplicates(table: sa.Table) -> sa.Insert:
    """INSERT that skips a row breaking a unique constraint, in the database's words. On
    MariaDB/MySQL an update of nothing, not INSERT IGNORE: IGNORE also turns a value that
    does not fit into a warning and stores it cut, where we want the error."""
    dialect = db.session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(table)
        return statement.on_duplicate_key_update({c.name: c for c in table.primary_key})
    raise NotImplementedError(f"imports do not support the {dialect} database")


@dataclass(frozen=True)
class Statements:
    posts: sa.Insert
    problems: sa.Insert
    follows: sa.Insert
    # PostgreSQL: each batch's queries planned for their own values. psycopg prepares a
    # statement run five times, and PostgreSQL may then keep a generic plan made while the
    # account had few posts (a scan of them all), which a large import makes quadratic:
    # 50,000 posts took 26 s instead of 4.
    custom_plans: sa.TextClause | None = None

    @classmethod
    def for_session(cls) -> Statements:
        custom = db.session.get_bind().dialect.name == "postgresql"
        return cls(insert_ignoring_duplicates(Post.__table__),
                   insert_ignoring_duplicates(ImportProblem.__table__),
                   insert_ignoring_duplicates(followers),
                   sa.text("SET LOCAL plan_cache_mode = force_custom_plan") if custom else None)


def run_import(imp: Import, archive: Archive,
               on_progress: Callable[[int], None] | None = None) -> dict:
    """Import the archive's items after imp.position, a batch per transaction (see the
    module's docstring), reporting the position after each commit (on_progress may raise to
    stop: what was committed stays, and the row says so); then follow the accounts the
    archive follows. Returns the summary (summary())."""
    batch_size = current_app.config["IMPORT_BATCH_SIZE"]
    statements = Statements.for_session()
    by_text = texts_to_compare(imp, archive.origin)
    start = imp.position
    after_start = (item for item in archive.items() if item.item > start)
    for batch in batches(after_start, batch_size):
        position = import_batch(imp, archive.origin, batch, statements, by_text)
        if on_progress is not None:
            on_progress(position)
    follow_accounts(imp, archive.following(), statements)
    return summary(imp)


def import_batch(imp: Import, origin: str, batch: list[Item], statements: Statements,
                 by_text: bool = True) -> int:
    """Import one batch in one transaction (committed). When the database refuses a value
    (one item it cannot store), the batch goes again an item per transaction, so that item
    fails alone, recorded as a problem. Returns the position reached."""
    try:
        return _commit_batch(imp, origin, batch, statements, by_text)
    except sa.exc.DBAPIError as exc:
        db.session.rollback()
        if _database_lost(exc):
            raise
        log.warning("Import %s: the database refused a batch (%s); importing it an item "
                    "at a time", imp.id, type(exc.orig).__name__)
    position = imp.position
    for item in batch:
        try:
            position = _commit_batch(imp, origin, [item], statements, by_text)
        except sa.exc.DBAPIError as exc:
            db.session.rollback()
            if _database_lost(exc):
                raise
            reason = f"the database could not store it ({type(exc.orig).__name__})"
            failed = BrokenItem(item.item, reason, getattr(item, "original_id", None))
            position = _commit_batch(imp, origin, [failed], statements)
    return position


def _database_lost(exc: sa.exc.DBAPIError) -> bool:
    # The same test as app/jobs/failures.is_database_lost (this package does not climb into
    # the job system): a lost database is retried as a whole, never blamed on an item.
    return isinstance(exc, sa.exc.OperationalError) or exc.connection_invalidated


def _commit_batch(imp: Import, origin: str, batch: list[Item], statements: Statements,
                  by_text: bool = True) -> int:
    user_id = imp.user_id
    if statements.custom_plans is not None:
        db.session.execute(statements.custom_plans)
    posts = [item for item in batch if isinstance(item, ArchivePost)]
    broken = [item for item in batch if isinstance(item, BrokenItem)]
    skipped = Counter(item.reason for item in batch if isinstance(item, SkippedItem))
    sorted_out = sort_out(user_id, origin, posts, by_text)
    if sorted_out.duplicates:
        skipped[DUPLICATE] += sorted_out.duplicates
    if sorted_out.new:
        db.session.execute(statements.posts, [
            post_row(user_id, origin, post, key) for key, post in sorted_out.new])
    if broken:
        db.session.execute(statements.problems, [
            {"import_id": imp.id, "outcome": FAILED, "item": item.item,
             "original_id": _cut(item.original_id, 255), "reason": _cut(item.reason, 255)}
            for item in broken])
    position = batch[-1].item
    imp.position = position
    imp.imported += len(sorted_out.new)
    imp.failed += len(broken)
    if skipped:
        imp.skipped_json = json.dumps(dict(Counter(imp.skipped()) + skipped))
    db.session.commit()
    return position


def post_row(user_id: int, origin: str, post: ArchivePost, key: str) -> dict:
    """The post table's row for an archive's post: its author the importing user, its body
    whole, its time to the second."""
    return {"body": post.body, "timestamp": to_the_second(post.timestamp), "user_id": user_id,
            "language": _language(post.language), "origin": origin,
            "origin_id": _cut(post.original_id, 255), "origin_key": key}


def _language(code: str | None) -> str | None:
    """A language tag that fits the column (5 characters): "pt-BR" as it is, "zh-Hant" as
    its language, "zh"."""
    if not code:
        return None
    code = code.strip()
    if len(code) <= 5:
        return code or None
    primary = code.split("-", 1)[0]
    return primary if 0 < len(primary) <= 5 else None


def _cut(text: str | None, length: int) -> str | None:
    return text[:length] if text is not None else None


# --------------------------------------------------------------------------- follows

def follow_accounts(imp: Import, following: Iterable[tuple[int, str]],
                    statements: Statements | None = None) -> int:
    """Follow the accounts the archive follows that exist here, by username (the part of the
    address before its host; any case), never the user themself; each other one is a
    problem ("not_found"). One transaction, and idempotent: a retried import does it again
    to the same effect. Records and returns how many of them the user now follows."""
    statements = statements or Statements.for_session()
    user_id = imp.user_id
    followed: set[int] = set()
    for chunk in batches(following, FOLLOWS_BATCH):
        names = {centre.account_name(address).lower() for _, address in chunk} - {""}
        found: dict[str, int] = {}
        if names:
            found = {name: other for name, other in db.session.execute(
                sa.select(sa.func.lower(User.username), User.id)
                .where(sa.func.lower(User.username).in_(names)))}
        new, missing = set(), []
        for line, address in chunk:
            other = found.get(centre.account_name(address).lower())
            if other is None:
                missing.append({"import_id": imp.id, "outcome": NOT_FOUND, "item": line,
                                "original_id": _cut(address, 255), "reason": NOT_FOUND_REASON})
            elif other != user_id and other not in followed:
                new.add(other)
        if new:
            db.session.execute(statements.follows, [
                {"follower_id": user_id, "followed_id": other} for other in sorted(new)])
            followed |= new
        if missing:
            db.session.execute(statements.problems, missing)
    imp.followed = len(followed)
    db.session.commit()
    return len(followed)


# --------------------------------------------------------------------------- the outcome

def summary(imp: Import) -> dict:
    """What the import did: imported, skipped by reason, failed, followed, not found."""
    not_found = db.session.scalar(
        sa.select(sa.func.count(ImportProblem.id))
        .where(ImportProblem.import_id == imp.id, ImportProblem.outcome == NOT_FOUND)) or 0
    return {"imported": imp.imported, "skipped": imp.skipped(), "failed": imp.failed,
            "followed": imp.followed, "not_found": not_found}


def skip_reason_label(reason: str) -> str:
    """A skip reason in the reader's language (the readers' SKIP_REASONS, and DUPLICATE)."""
    if reason == DUPLICATE:
        return _("already on your account")
    return _(SKIP_REASONS[reason]) if reason in SKIP_REASONS else reason


def preview_message(preview: dict) -> str:
    """What the user's task alert says when the archive has been read."""
    return ngettext("Your archive was read: %(num)d post found. Check the preview, then "
                    "confirm the import.",
                    "Your archive was read: %(num)d posts found. Check the preview, then "
                    "confirm the import.", preview.get("posts", 0))


def finished_message(imp: Import) -> str:
    """What the user's task alert says when the import is done."""
    return ngettext("Your import is done: %(num)d post imported.",
                    "Your import is done: %(num)d posts imported.", imp.imported)


def mail_context(imp: Import, result: dict) -> dict:
    """What the done mail's templates (email/import_done.*) are rendered with."""
    return dict(
        user=imp.user, imp=imp, summary=result,
        skipped=[(skip_reason_label(reason), count)
                 for reason, count in sorted(result["skipped"].items())],
        import_url=public_url(f"/imports/{imp.id}"))


def compose_mail(imp: Import, result: dict) -> dict:
    """The fields of send_email_once for the one mail about a finished import."""
    context = mail_context(imp, result)
    return dict(
        subject=_("[Microblog] Your import is done"),
        sender=current_app.config["ADMINS"][0], recipients=[imp.user.email],
        text_body=render_template("email/import_done.txt", **context),
        html_body=render_template("email/import_done.html", **context))


def send_done_mail(imp: Import, mail_key: str) -> bool:
    """Send the user the one mail about their finished import (send_email_once: a retried
    task never sends it twice). Returns False when it had been sent before."""
    return send_email_once(key=mail_key, **compose_mail(imp, summary(imp)))
