"""The export centre's forms."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import RadioField, SubmitField
from wtforms.validators import InputRequired


@dataclass(frozen=True)
class FormatChoice:
    value: str  # a key of app.exports.formats.FORMATS
    label: object  # lazy strings (_l): translated when shown
    description: object


FORMAT_CHOICES = [
    FormatChoice("json", _l("JSON"),
                 _l("One file with every post, its date and language: for programs and "
                    "for importing elsewhere.")),
    FormatChoice("csv", _l("CSV"),
                 _l("A table with one post per row: opens in any spreadsheet.")),
    FormatChoice("activitystreams", _l("ActivityStreams archive"),
                 _l("A zip in the fediverse's format (ActivityPub outbox), for moving to "
                    "Mastodon-like services.")),
]


class StartExportForm(FlaskForm):
    format = RadioField(
        _l("Format"), choices=[(c.value, c.label) for c in FORMAT_CHOICES], default="json",
        validators=[InputRequired(message=_l("Choose an export format."))],
        validate_choice=False)  # an unknown one is refused by centre.new_export, with its reason
    submit = SubmitField(_l("Start export"))


class ExportActionForm(FlaskForm):
    """Cancel, retry, delete: only the CSRF token. (Not app.main's EmptyForm: a worker imports
    this package through app.exports.centre, and app.main would pull in every blueprint.)"""
