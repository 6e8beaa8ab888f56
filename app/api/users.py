"""/api/users/me (your own account) and /api/users/<id> (anyone's public profile: the fields
a member sees on the profile page)."""

from __future__ import annotations

import marshmallow as ma
from flask import abort

from app import db
from app.api import bp
from app.api.auth import current_api_user
from app.api.conventions import Resource, Timestamp
from app.models import User

blp = Resource("users", __name__, url_prefix="/users", description="Profiles.")


class UserSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    username = ma.fields.String(required=True)
    about_me = ma.fields.String(allow_none=True)
    last_seen = Timestamp(allow_none=True)
    posts_count = ma.fields.Integer(required=True)
    followers_count = ma.fields.Integer(required=True)
    following_count = ma.fields.Integer(required=True)
    avatar = ma.fields.String(required=True, metadata={"description": "URL of an image"})


class MeSchema(UserSchema):
    email = ma.fields.String(required=True)


def user_body(user: User) -> dict:
    return {"id": user.id, "username": user.username, "about_me": user.about_me,
            "last_seen": user.last_seen, "posts_count": user.posts_count(),
            "followers_count": user.followers_count(),
            "following_count": user.following_count(),
            "avatar": user.avatar(128)}


@blp.route("/me")
@blp.response(200, MeSchema)
def me() -> dict:
    """Your account"""
    user = current_api_user()
    return user_body(user) | {"email": user.email}


@blp.route("/<int:user_id>")
@blp.response(200, UserSchema)
def user(user_id: int) -> dict:
    """A member's public profile"""
    found = db.session.get(User, user_id) if 0 < user_id < 2**63 else None
    if found is None:
        abort(404)
    return user_body(found)


bp.register_blueprint(blp)
