"""Request bodies are bounded before anything reads them.

MAX_CONTENT_LENGTH bounds a whole body, MAX_FORM_MEMORY_SIZE one multipart field held in
memory, MAX_FORM_PARTS the number of multipart fields (Flask >= 3.1 reads all three from the
config). A body that says it is larger is refused here, first of all the before-request
functions (CSRF, rate limits and the input guards all read the form); a chunked body that has no
Content-Length is cut off with the same 413 when reading passes the limit (gunicorn marks its
input as terminated, so Werkzeug bounds it).

The one route that needs more (an upload) says so with `max_body_size("ITS_SETTING")`, and gets
that limit for itself only; it must stream what it reads to storage rather than hold it, and
(its chunked bodies not being buffered here) treat a body of exactly the limit as too large.
It may also say what its 413 page tells the user (`too_large`): a file too large for an import
is not "what you sent", and its limit reads in MiB.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import TypeVar

from flask import Flask, abort, current_app, request
from flask_babel import _

View = TypeVar("View", bound=Callable)
_ATTRIBUTE = "max_body_size_setting"
_MESSAGE = "max_body_size_message"


def max_body_size(setting: str,
                  too_large: Callable[[str], str] | None = None) -> Callable[[View], View]:
    """Give a view a body limit of its own: the config key `setting`, in bytes (None: no
    limit). It also applies to each multipart field held in memory, so a file part can be
    read in one piece; it is applied before any before-request function reads the body.
    `too_large(limit)`, given the limit in words ("100 MiB"), is what its 413 page says
    (too_large_message); without it, the general message."""

    def mark(view: View) -> View:
        setattr(view, _ATTRIBUTE, setting)
        if too_large is not None:
            setattr(view, _MESSAGE, too_large)
        return view

    return mark


def too_large_message(limit: str) -> str | None:
    """The current view's own words for a body past its limit (`limit`, in words), or None
    when it has none."""
    view = current_app.view_functions.get(request.endpoint or "")
    say = getattr(view, _MESSAGE, None)
    return say(limit) if say is not None else None


def _apply_limit() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    setting = getattr(view, _ATTRIBUTE, None)
    if setting is not None:
        limit = current_app.config[setting]
        request.max_content_length = limit
        request.max_form_memory_size = limit
    limit = request.max_content_length
    if limit is None:
        return
    if request.content_length is not None:
        if request.content_length > limit:
            abort(413)
    elif setting is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        _buffer_chunked_body(limit)


def _buffer_chunked_body(limit: int) -> None:
    environ = request.environ
    try:
        body = environ["wsgi.input"].read(limit + 1)
    except Exception:  # the server's own error for a malformed chunk (gunicorn's ParseException)
        abort(400, _("The body of the request was cut short or malformed. Please try again."))
    if len(body) > limit:
        abort(413)
    # From here on the request reads as one with this Content-Length.
    environ["wsgi.input"] = BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def init_app(app: Flask) -> None:
    """Call before any extension that reads the body registers its before-request function."""
    app.before_request(_apply_limit)
