"""The import pages' forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired


class UploadForm(FlaskForm):
    """The archive to import. What kind it is, is read from its content by the preview task,
    never from the name or the type the browser gives it; so nothing here looks at either."""

    file = FileField(_l("Archive file"),
                     validators=[FileRequired(message=_l("Choose a file to import."))])


class ImportActionForm(FlaskForm):
    """Import (confirm) and cancel: only the CSRF token."""
