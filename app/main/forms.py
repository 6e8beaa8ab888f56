import sqlalchemy as sa
from flask_babel import _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from app import db
from app.auth.forms import USERNAME_RULES
from app.models import User


class EditProfileForm(FlaskForm):
    username = StringField(_l("Username"), validators=USERNAME_RULES)
    about_me = TextAreaField(_l("About me"), validators=[Length(min=0, max=140)])
    submit = SubmitField(_l("Submit"))

    def __init__(self, original_username, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.original_username = original_username

    def validate_username(self, username):
        if username.data.lower() != self.original_username.lower():
            user = db.session.scalar(sa.select(User).where(
                sa.func.lower(User.username) == username.data.lower()))
            if user is not None:
                raise ValidationError(_("Please use a different username."))


class PostForm(FlaskForm):
    post = TextAreaField(_l("Say something"), validators=[DataRequired(), Length(min=1, max=280)])
    submit = SubmitField(_l("Submit"))


class MessageForm(FlaskForm):
    message = TextAreaField(_l("Message"), validators=[DataRequired(), Length(min=1, max=280)])
    submit = SubmitField(_l("Submit"))
