"""Forms shared by several blueprints. Here rather than in one of them: a blueprint's package
imports its routes, so a form taken from app.main would pull in the main blueprint's routes
(and, through them, import app.auth's routes half-way through app.main's)."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SubmitField


class EmptyForm(FlaskForm):
    """A form with only the CSRF token: for POST buttons (follow, export, logout)."""

    submit = SubmitField(_l("Submit"))
