import sqlalchemy as sa
from flask_babel import _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired as Required
from wtforms.validators import Email, EqualTo, Length, Regexp, ValidationError

from app import db
from app.models import User


def normalize_email(value: str | None) -> str | None:
    """A field filter: spaces around a pasted or autocompleted address are not part of it, and
    addresses are stored in lower case. Validators see the stored form: lowercasing can make
    a text longer ('İ' becomes two characters), and VARCHAR(120) must still hold it."""
    return value.strip().lower() if isinstance(value, str) else value


# ASCII only, so that no two names can look alike by Unicode confusables; names compare
# case-insensitively (the forms below, and the login). \A...\Z, not ^...$: `$` also matches
# before a final newline, which let "alice\n" through as a second "alice".
USERNAME_RULES = [
    Required(), Length(min=2, max=64),
    Regexp(r"\A[A-Za-z0-9_.-]+\Z",
           message=_l("Usernames may contain only letters, digits, dots, dashes and underscores.")),
]


class LoginForm(FlaskForm):
    # No account has a longer name or password (RegistrationForm): a clear error, no lookup.
    username = StringField(_l("Username"), validators=[Required(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[Required(), Length(max=128)])
    remember_me = BooleanField(_l("Remember Me"))
    submit = SubmitField(_l("Sign In"))


class RegistrationForm(FlaskForm):
    username = StringField(_l("Username"), validators=USERNAME_RULES)
    email = StringField(_l("Email"), validators=[Required(), Email(), Length(max=120)],
                        filters=[normalize_email])
    password = PasswordField(_l("Password"), validators=[Required(), Length(min=8, max=128)])
    password2 = PasswordField(
        _l("Repeat Password"), validators=[Required(), EqualTo("password")])
    submit = SubmitField(_l("Register"))

    def validate_username(self, username):
        user = db.session.scalar(sa.select(User).where(
            sa.func.lower(User.username) == username.data.lower()))
        if user is not None:
            raise ValidationError(_("Please use a different username."))

    def validate_email(self, email):
        user = db.session.scalar(sa.select(User).where(
            sa.func.lower(User.email) == email.data.strip().lower()))
        if user is not None:
            raise ValidationError(_("Please use a different email address."))


class ResetPasswordRequestForm(FlaskForm):
    email = StringField(_l("Email"), validators=[Required(), Email(), Length(max=120)],
                        filters=[normalize_email])
    submit = SubmitField(_l("Request Password Reset"))


class ResetPasswordForm(FlaskForm):
    password = PasswordField(_l("Password"), validators=[Required(), Length(min=8, max=128)])
    password2 = PasswordField(
        _l("Repeat Password"), validators=[Required(), EqualTo("password")])
    submit = SubmitField(_l("Reset Password"))


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current Password"), validators=[Required()])
    password = PasswordField(_l("New Password"), validators=[Required(), Length(min=8, max=128)])
    password2 = PasswordField(
        _l("Repeat New Password"), validators=[Required(), EqualTo("password")])
    submit = SubmitField(_l("Change Password"))
