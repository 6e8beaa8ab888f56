"""Pagination of the post and message lists: the `?page=` argument, checked before it reaches
the query, and a page of rows found without counting the whole list."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, current_app, request

from app import db

# No list has a billion pages; a bigger number would overflow the query's OFFSET (a 500 on
# PostgreSQL, whose OFFSET is a bigint).
MAX_PAGE = 10**9


def page_number() -> int:
    """The requested page, 1 when absent; 404 for a page that cannot exist."""
    page = request.args.get("page", 1, type=int)
    if not 1 <= page <= MAX_PAGE:
        abort(404)
    return page


@dataclass
class Page:
    """One page of a list: its rows, and whether there are newer (prev) and older (next)
    pages: all the pages' "Newer posts" / "Older posts" links need."""

    items: list
    page: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def prev_num(self) -> int | None:
        return self.page - 1 if self.has_prev else None

    @property
    def next_num(self) -> int | None:
        return self.page + 1 if self.has_next else None


def paginate(query: sa.Select, per_page: int | None = None) -> Page:
    """The requested page of `query`'s rows (POSTS_PER_PAGE of them), 404 past the end.

    Not db.paginate: it also runs a COUNT of the whole list (every post on the site, for
    /explore) to number pages the templates never show. Asking for one row more than a page
    tells whether an older page exists."""
    page = page_number()
    per_page = per_page or current_app.config["POSTS_PER_PAGE"]
    rows = list(db.session.scalars(query.limit(per_page + 1).offset((page - 1) * per_page)))
    if not rows and page != 1:
        abort(404)
    return Page(items=rows[:per_page], page=page, has_next=len(rows) > per_page)
