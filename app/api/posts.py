"""/api/posts: the lists the pages show (your feed, your own posts, explore), a page at a
time by cursor, and a new post, as the home page's form makes it."""

from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_babel import _

from app import db, get_locale
from app.api import bp
from app.api.auth import current_api_user
from app.api.conventions import PageArgs, Resource, Timestamp, keyset_page, link_doc
from app.api.idempotency import idempotency_doc, idempotent
from app.api.problems import ApiProblem
from app.models import Post, User

blp = Resource("posts", __name__, url_prefix="/posts", description="Posts.")

MAX_LENGTH = 280  # the home page's form (app/main/forms.py: PostForm)
LISTS = ("feed", "mine", "explore")


class ListArgs(PageArgs):
    list = ma.fields.String(load_default="feed", validate=ma.validate.OneOf(LISTS), metadata={
        "description": "feed: yours and those you follow (the home page); mine: yours; "
                       "explore: everyone's"})


class AuthorSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    username = ma.fields.String(required=True)


class PostSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    body = ma.fields.String(required=True)
    timestamp = Timestamp(required=True)
    language = ma.fields.String(allow_none=True)
    author = ma.fields.Nested(AuthorSchema, required=True)


class NewPostSchema(ma.Schema):
    # Some text that is not all spaces, and no NUL (no database stores one).
    body = ma.fields.String(required=True, metadata={
        "maxLength": MAX_LENGTH, "minLength": 1,
        "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"})


def post_body(post: Post) -> dict:
    return {"id": post.id, "body": post.body, "timestamp": post.timestamp,
            "language": post.language,
            "author": {"id": post.author.id, "username": post.author.username}}


@blp.route("")
@blp.arguments(ListArgs, location="query")
@blp.response(200, PostSchema(many=True), headers=link_doc()["headers"])
def posts(args: dict) -> list[dict]:
    """Posts, newest first: your feed (the default), your own, or everyone's"""
    user = current_api_user()
    if args["list"] == "feed":
        query = user.following_posts()
    elif args["list"] == "mine":
        query = sa.select(Post).where(Post.user_id == user.id)
    else:
        query = sa.select(Post)
    query = query.options(so.joinedload(Post.author).load_only(User.id, User.username))
    page = keyset_page(query, Post.timestamp, Post.id, args, lambda p: (p.timestamp, p.id))
    return [post_body(post) for post in page]


@blp.route("", methods=["POST"])
@idempotent
@blp.arguments(NewPostSchema)
@blp.response(201, PostSchema)
@blp.doc(**idempotency_doc())
def new_post(args: dict) -> dict:
    """Write a post

    1 to 280 characters (spaces around it are dropped); its language is Accept-Language's."""
    body = args["body"].strip()
    if not 0 < len(body) <= MAX_LENGTH:
        raise ApiProblem(422, "invalid-post", _(
            "A post is 1 to %(max)d characters long.", max=MAX_LENGTH))
    locale = get_locale()
    post = Post(body=body, author=current_api_user(),
                language=str(locale)[:5] if locale else None)
    db.session.add(post)
    db.session.commit()
    return post_body(post)


bp.register_blueprint(blp)
