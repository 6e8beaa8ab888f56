"""The `?page=` argument every paginated page reads, checked before it reaches the query."""

from flask import abort, request

# No list has a billion pages; a bigger number would overflow the query's OFFSET (a 500 on
# PostgreSQL, whose OFFSET is a bigint).
MAX_PAGE = 10**9


def page_number() -> int:
    """The requested page, 1 when absent; 404 for a page that cannot exist."""
    page = request.args.get("page", 1, type=int)
    if not 1 <= page <= MAX_PAGE:
        abort(404)
    return page
