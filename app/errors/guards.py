"""Input no database can store is refused before any view sees it, with a clear 400 page (or
JSON): a NUL character (PostgreSQL refuses it in text, so it would be a 500 there), and a JSON
body that is not an object of text fields (Flask-WTF reads a JSON body as form data, and any
other shape crashes the form)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import abort, request
from flask_babel import _

from app.errors import bp

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Blueprints that take JSON of their own shape (an API) check it themselves.
JSON_API_BLUEPRINTS: set[str] = set()


def _texts() -> Iterator[str]:
    for value in (request.view_args or {}).values():
        if isinstance(value, str):
            yield value
    for multi in (request.args, request.form):
        for key, values in multi.lists():
            yield key
            yield from values
    data = request.get_json(silent=True) if request.is_json else None
    if _is_form_like(data):
        for key, value in data.items():
            yield key
            yield from ([value] if isinstance(value, str) else value)


def _is_form_like(data: object) -> bool:
    """What Flask-WTF can read as form data: {"field": "text" or ["text", ...]}."""
    return isinstance(data, dict) and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
        for v in data.values())


@bp.before_app_request
def refuse_unstorable_input():
    if any("\x00" in text for text in _texts()):
        abort(400, _("The text you sent contains a NUL character (U+0000), which cannot be "
                     "stored. Remove it and try again."))
    if (request.method in STATE_CHANGING and request.is_json
            and request.blueprint not in JSON_API_BLUEPRINTS):
        if not _is_form_like(request.get_json(silent=True)):
            abort(400, _("This form takes form fields; a JSON body must be an object whose "
                         "values are text."))
