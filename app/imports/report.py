"""An import's summary, for its page and as the CSV report (GET /imports/<id>/report).

The report is one CSV file: a header, one summary row per outcome (imported, skipped by
reason, failed, followed, not found), then one row per problem item (a post that failed, an
account not found), in the archive's order:

    outcome,reason,count,item,original_id
    imported,,1200,,
    skipped,boost,31,,
    failed,,1,,
    failed,no `published`,,3112,https://mastodon.example/users/x/statuses/1

It is written as it is sent (a long list of problems is never held in memory). Reasons and
ids come from the archive, which anyone may have written: every text cell is made inert for
spreadsheets (app.exports.formats.neutralise_cell), as our own posts.csv does.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from app import db
from app.exports.formats import neutralise_cell
from app.imports import centre
from app.models import Import, ImportProblem

HEADER = ("outcome", "reason", "count", "item", "original_id")
FAILED = "failed"
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Summary:
    """What an import did, as counted so far (a running or cancelled import's is partial)."""

    imported: int
    failed: int
    followed: int
    not_found: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def summary_of(imp: Import) -> Summary:
    """The counts of `imp`: its own columns, and the accounts not found (one query)."""
    not_found = db.session.scalar(
        sa.select(sa.func.count(ImportProblem.id))
        .where(ImportProblem.import_id == imp.id, ImportProblem.outcome == NOT_FOUND)) or 0
    return Summary(imported=imp.imported, failed=imp.failed, followed=imp.followed,
                   not_found=not_found, skipped=dict(sorted(imp.skipped().items())))


def report_rows(imp: Import) -> Iterator[tuple[str, str, str, str, str]]:
    """The report's rows after the header: the summary, then each problem."""
    summary = summary_of(imp)
    yield "imported", "", str(summary.imported), "", ""
    for reason, count in summary.skipped.items():
        yield "skipped", neutralise_cell(reason), str(count), "", ""
    yield FAILED, "", str(summary.failed), "", ""
    yield "followed", "", str(summary.followed), "", ""
    yield NOT_FOUND, "", str(summary.not_found), "", ""
    for problem in centre.problems_of(imp):
        yield (neutralise_cell(problem.outcome), neutralise_cell(problem.reason), "",
               str(problem.item), neutralise_cell(problem.original_id or ""))


def report_csv(imp: Import) -> Iterator[bytes]:
    """The report as CSV, in pieces: UTF-8 with a byte order mark (so that Excel reads it as
    UTF-8, as our posts.csv), rows ending in CRLF (RFC 4180)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    yield codecs.BOM_UTF8 + _drain(buffer)
    for count, row in enumerate(report_rows(imp), 1):
        writer.writerow(row)
        if count % 500 == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def report_filename(imp: Import) -> str:
    return f"import-{imp.created_at:%Y-%m-%d}-report.csv"


def _drain(buffer: io.StringIO) -> bytes:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text.encode("utf-8")
