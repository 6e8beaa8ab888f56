"""The settings pages' forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

# How long a new token lives: the form's value -> days (None: until revoked).
EXPIRY_DAYS: dict[str, int | None] = {"7": 7, "30": 30, "90": 90, "365": 365, "never": None}


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class NewTokenForm(FlaskForm):
    name = StringField(_l("Name"), filters=[_strip],
                       description=_l("What the token is for, e.g. the script that uses it."),
                       validators=[DataRequired(message=_l("Give the token a name.")),
                                   Length(max=64)])
    expires = SelectField(_l("Expires"), default="30", choices=[
        ("7", _l("In 7 days")), ("30", _l("In 30 days")), ("90", _l("In 90 days")),
        ("365", _l("In a year")), ("never", _l("Never"))])
    scope = RadioField(_l("Scope"), default="read", choices=[
        ("read", _l("Read: see your posts, exports and imports")),
        ("read write", _l("Read and write: also post, and start, cancel or delete exports and "
                          "imports"))])
    submit = SubmitField(_l("Create token"))
