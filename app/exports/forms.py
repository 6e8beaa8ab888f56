"""The export centre's forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import RadioField, SubmitField
from wtforms.validators import InputRequired

from app.exports.formats import FORMATS

# The page's choices: the formats themselves (name, label, description), in FORMATS' order.
FORMAT_CHOICES = list(FORMATS.values())


class StartExportForm(FlaskForm):
    format = RadioField(
        _l("Format"), choices=[(f.name, f.label) for f in FORMAT_CHOICES], default="json",
        validators=[InputRequired(message=_l("Choose an export format."))],
        validate_choice=False)  # an unknown one is refused by centre.new_export, with its reason
    submit = SubmitField(_l("Start export"))


class ExportActionForm(FlaskForm):
    """Cancel, retry, delete: only the CSRF token. (Not app.main's EmptyForm: a worker imports
    this package through app.exports.centre, and app.main would pull in every blueprint.)"""
