"""Posting, the home feed, explore, pagination, following, profiles and avatars."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from hashlib import md5

import pytest
import sqlalchemy as sa

from app import db
from app.models import Post, User, followers
from tests.conftest import csrf_token, login, make_user

T0 = datetime(2024, 5, 1, 12, 0, 0)


def add_post(author: User, body: str, minutes: int = 0) -> Post:
    """A post written `minutes` after T0 (so the order of posts is known)."""
    post = Post(body=body, author=author, timestamp=T0 + timedelta(minutes=minutes))
    db.session.add(post)
    db.session.commit()
    return post


def post_bodies() -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Post.body).order_by(Post.id)))


def shown_posts(html: str) -> list[str]:
    """The bodies of the posts on a page, top to bottom."""
    return re.findall(r'<div class="post-body">(.*?)</div>', html, re.S)


def submit_post(client, body, with_csrf=True):
    data = {"post": body}
    if with_csrf:
        data["csrf_token"] = csrf_token(client, "/index")
    return client.post("/index", data=data)


def follows() -> set[tuple[str, str]]:
    follower = sa.orm.aliased(User)
    followed = sa.orm.aliased(User)
    rows = db.session.execute(
        sa.select(follower.username, followed.username)
        .join(followers, followers.c.follower_id == follower.id)
        .join(followed, followers.c.followed_id == followed.id))
    return {tuple(row) for row in rows}


# --------------------------------------------------------------------------- posting

def test_a_post_is_saved_and_shown_on_the_home_page(logged_in, user):
    response = submit_post(logged_in, "  my first post  ")
    assert response.status_code == 302
    assert response.location == "/index"
    html = logged_in.get("/index").get_data(as_text=True)
    assert "Your post is now live!" in html
    assert shown_posts(html) == ["my first post"]
    post = db.session.scalar(sa.select(Post))
    assert post.body == "my first post"
    assert post.author.username == "susan"


def test_a_post_of_exactly_280_characters_is_accepted(logged_in):
    assert submit_post(logged_in, "x" * 280).status_code == 302
    assert post_bodies() == ["x" * 280]


@pytest.mark.parametrize("body, message", [
    ("", "This field is required."),
    ("   \n  ", "This field is required."),
    ("x" * 281, "Field must be between 1 and 280 characters long."),
])
def test_an_empty_or_too_long_post_is_refused(logged_in, body, message):
    response = submit_post(logged_in, body)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert post_bodies() == []


def test_a_post_without_csrf_token_is_refused(logged_in):
    response = submit_post(logged_in, "sneaky", with_csrf=False)
    assert response.status_code == 400
    assert post_bodies() == []


def test_posting_needs_login(client, user):
    response = client.post("/index", data={"post": "anonymous", "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")
    assert post_bodies() == []


def test_html_in_a_post_is_shown_as_text(logged_in, user):
    make_user("bob")
    submit_post(logged_in, '<script>alert("x")</script><b>bold</b>')
    for url in ("/index", "/explore", "/user/susan"):
        html = logged_in.get(url).get_data(as_text=True)
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html, url


# --------------------------------------------------------------------------- feeds

def test_home_feed_has_own_and_followed_posts_newest_first(logged_in, user):
    bob, carol = make_user("bob"), make_user("carol")
    add_post(user, "susan early", 1)
    add_post(bob, "bob middle", 2)
    add_post(carol, "carol late", 3)
    add_post(user, "susan latest", 4)
    user.follow(bob)
    db.session.commit()
    html = logged_in.get("/index").get_data(as_text=True)
    # Three a page in the tests.
    assert shown_posts(html) == ["susan latest", "bob middle", "susan early"]
    assert "carol late" not in html


def test_explore_shows_everyones_posts_newest_first(logged_in, user):
    bob, carol = make_user("bob"), make_user("carol")
    add_post(bob, "bob first", 1)
    add_post(carol, "carol second", 2)
    add_post(user, "susan third", 3)
    html = logged_in.get("/explore").get_data(as_text=True)
    assert shown_posts(html) == ["susan third", "carol second", "bob first"]
    assert "Explore" in html
    assert 'name="post"' not in html  # no posting form on explore


def test_posts_written_in_the_same_instant_keep_a_stable_newest_first_order(logged_in, user):
    for body in ("one", "two", "three"):
        add_post(user, body, 0)
    assert shown_posts(logged_in.get("/index").get_data(as_text=True)) == ["three", "two", "one"]


def test_empty_feed_says_so(logged_in):
    for url in ("/index", "/explore", "/user/susan"):
        response = logged_in.get(url)
        assert response.status_code == 200
        assert "No posts yet." in response.get_data(as_text=True)


# --------------------------------------------------------------------------- pagination

@pytest.fixture
def four_posts(user):
    for i in range(1, 5):
        add_post(user, f"post {i}", i)


@pytest.mark.parametrize("url", ["/index", "/explore", "/user/susan"])
def test_pagination_splits_posts_three_a_page(logged_in, four_posts, url):
    first = logged_in.get(url).get_data(as_text=True)
    assert shown_posts(first) == ["post 4", "post 3", "post 2"]
    assert "Older posts" in first
    assert f'href="{url}?page=2"' in first

    second = logged_in.get(f"{url}?page=2").get_data(as_text=True)
    assert shown_posts(second) == ["post 1"]
    assert f'href="{url}?page=1"' in second


@pytest.mark.parametrize("url", ["/index", "/explore", "/user/susan"])
@pytest.mark.parametrize("page", ["3", "0", "-1", "1000000"])
def test_a_page_past_the_end_or_below_one_is_not_found(logged_in, four_posts, url, page):
    response = logged_in.get(f"{url}?page={page}")
    assert response.status_code == 404


@pytest.mark.parametrize("page", ["abc", "", "1.5"])
def test_a_non_integer_page_shows_page_one(logged_in, four_posts, page):
    response = logged_in.get(f"/explore?page={page}")
    assert response.status_code == 200
    assert shown_posts(response.get_data(as_text=True)) == ["post 4", "post 3", "post 2"]


def test_one_page_of_posts_shows_no_pager(logged_in, user):
    add_post(user, "only one")
    html = logged_in.get("/index").get_data(as_text=True)
    assert "Older posts" not in html


# --------------------------------------------------------------------------- follow

def follow(client, action, username, with_csrf=True):
    data = {"csrf_token": csrf_token(client, "/index")} if with_csrf else {}
    return client.post(f"/{action}/{username}", data=data)


def test_follow_and_unfollow(logged_in, user):
    make_user("bob")
    response = follow(logged_in, "follow", "bob")
    assert response.status_code == 302
    assert response.location == "/user/bob"
    html = logged_in.get("/user/bob").get_data(as_text=True)
    assert "You are following bob!" in html
    assert "1 follower," in html
    assert "Unfollow" in html
    assert follows() == {("susan", "bob")}
    assert "0 followers, 1 following" in logged_in.get("/user/susan").get_data(as_text=True)

    # Following twice changes nothing.
    follow(logged_in, "follow", "bob")
    assert follows() == {("susan", "bob")}

    response = follow(logged_in, "unfollow", "bob")
    assert response.status_code == 302
    html = logged_in.get("/user/bob").get_data(as_text=True)
    assert "You are not following bob." in html
    assert "0 followers" in html
    assert follows() == set()


@pytest.mark.parametrize("action", ["follow", "unfollow"])
def test_follow_by_get_is_not_allowed(logged_in, action):
    make_user("bob")
    assert logged_in.get(f"/{action}/bob").status_code == 405
    assert follows() == set()


def test_follow_without_csrf_is_refused(logged_in):
    make_user("bob")
    assert follow(logged_in, "follow", "bob", with_csrf=False).status_code == 400
    assert follows() == set()


def test_unfollow_without_csrf_is_refused(logged_in, user):
    bob = make_user("bob")
    user.follow(bob)
    db.session.commit()
    assert follow(logged_in, "unfollow", "bob", with_csrf=False).status_code == 400
    assert follows() == {("susan", "bob")}


@pytest.mark.parametrize("action, message", [
    ("follow", "You cannot follow yourself!"),
    ("unfollow", "You cannot unfollow yourself!"),
])
def test_following_yourself_is_refused(logged_in, action, message):
    response = follow(logged_in, action, "susan")
    assert response.location == "/user/susan"
    assert message in logged_in.get("/user/susan").get_data(as_text=True)
    assert follows() == set()


@pytest.mark.parametrize("action", ["follow", "unfollow"])
def test_following_an_unknown_user_says_so(logged_in, action):
    response = follow(logged_in, action, "nobody")
    assert response.location == "/index"
    assert "User nobody not found." in logged_in.get("/index").get_data(as_text=True)
    assert follows() == set()


def test_following_needs_login(client, user):
    make_user("bob")
    response = client.post("/follow/bob", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")
    assert follows() == set()


# --------------------------------------------------------------------------- profiles

def test_own_profile_offers_edit_and_export_but_no_follow(logged_in, user):
    add_post(user, "hello from susan")
    html = logged_in.get("/user/susan").get_data(as_text=True)
    assert "User: susan" in html
    assert "Edit your profile" in html
    assert "Export your posts" in html
    assert ">Follow<" not in html
    assert "Send private message" not in html
    assert shown_posts(html) == ["hello from susan"]


def test_another_users_profile_offers_follow_and_message(logged_in):
    bob = make_user("bob")
    bob.about_me = "I <3 <em>birds</em>"
    add_post(bob, "bob's post")
    html = logged_in.get("/user/bob").get_data(as_text=True)
    assert "User: bob" in html
    assert "I &lt;3 &lt;em&gt;birds&lt;/em&gt;" in html
    assert ">Follow<" in html
    assert "Send private message" in html
    assert "Edit your profile" not in html
    assert "Export your posts" not in html
    assert shown_posts(html) == ["bob&#39;s post"]


def test_profile_of_an_unknown_user_is_not_found(logged_in):
    assert logged_in.get("/user/nobody").status_code == 404
    assert logged_in.get("/user/nobody/popup").status_code == 404


def test_profile_shows_only_that_users_posts(logged_in, user):
    bob = make_user("bob")
    add_post(user, "susan's", 1)
    add_post(bob, "bob's", 2)
    assert shown_posts(logged_in.get("/user/bob").get_data(as_text=True)) == ["bob&#39;s"]


def test_user_popup_shows_name_about_and_counts(logged_in, user):
    bob = make_user("bob")
    bob.about_me = "birdwatcher"
    user.follow(bob)
    db.session.commit()
    html = logged_in.get("/user/bob/popup").get_data(as_text=True)
    assert "bob" in html
    assert "birdwatcher" in html
    assert "1 follower, 0 following" in html


def test_visiting_records_last_seen(logged_in, user):
    user.last_seen = datetime(2000, 1, 1)
    db.session.commit()
    logged_in.get("/index")
    db.session.expire_all()
    assert user.last_seen > datetime(2020, 1, 1)
    assert "Last seen on" in logged_in.get("/user/susan").get_data(as_text=True)


# --------------------------------------------------------------------------- edit profile

def edit_profile(client, **fields):
    data = {"username": "susan", "about_me": "", "csrf_token": csrf_token(client, "/edit_profile")}
    data.update(fields)
    return client.post("/edit_profile", data=data)


def test_edit_profile_form_is_filled_in(logged_in, user):
    user.about_me = "about susan"
    db.session.commit()
    html = logged_in.get("/edit_profile").get_data(as_text=True)
    assert 'value="susan"' in html
    assert "about susan" in html


def test_edit_profile_saves_changes(logged_in, user):
    response = edit_profile(logged_in, username="susan2", about_me="I like <tags>")
    assert response.status_code == 302
    assert "Your changes have been saved." in logged_in.get("/edit_profile").get_data(
        as_text=True)
    db.session.expire_all()
    assert (user.username, user.about_me) == ("susan2", "I like <tags>")
    html = logged_in.get("/user/susan2").get_data(as_text=True)
    assert "I like &lt;tags&gt;" in html
    assert logged_in.get("/user/susan").status_code == 404


def test_edit_profile_may_change_the_case_of_ones_own_name(logged_in, user):
    assert edit_profile(logged_in, username="Susan").status_code == 302
    db.session.expire_all()
    assert user.username == "Susan"


@pytest.mark.parametrize("fields, message", [
    ({"username": "bob"}, "Please use a different username."),
    ({"username": "BOB"}, "Please use a different username."),
    ({"username": ""}, "This field is required."),
    ({"username": "has space"}, "Usernames may contain only letters"),
    ({"about_me": "x" * 141}, "Field must be between 0 and 140 characters long."),
])
def test_edit_profile_refuses_bad_input(logged_in, user, fields, message):
    make_user("bob")
    response = edit_profile(logged_in, **fields)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    db.session.expire_all()
    assert (user.username, user.about_me) == ("susan", None)


def test_edit_profile_without_csrf_is_refused(logged_in, user):
    response = logged_in.post("/edit_profile", data={"username": "hacked", "about_me": "x"})
    assert response.status_code == 400
    db.session.expire_all()
    assert user.username == "susan"


# --------------------------------------------------------------------------- avatars

def avatar_url(html: str, size: int) -> str:
    match = re.search(rf'src="(/avatar/[0-9a-f]{{32}}\.svg\?size={size})"', html)
    assert match, f"no avatar of size {size}"
    return match.group(1)


def test_profile_and_posts_show_a_local_avatar(logged_in, user):
    add_post(user, "with avatar")
    html = logged_in.get("/user/susan").get_data(as_text=True)
    digest = md5(b"susan@example.com").hexdigest()
    assert avatar_url(html, 128) == f"/avatar/{digest}.svg?size=128"
    assert avatar_url(html, 48) == f"/avatar/{digest}.svg?size=48"
    assert "gravatar" not in html

    response = logged_in.get(avatar_url(html, 128))
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    svg = response.get_data(as_text=True)
    assert svg.startswith("<svg")
    assert 'width="128"' in svg


def test_avatars_differ_between_users_and_are_stable(client, app):
    a = client.get(f"/avatar/{md5(b'a@example.com').hexdigest()}.svg").get_data(as_text=True)
    b = client.get(f"/avatar/{md5(b'b@example.com').hexdigest()}.svg").get_data(as_text=True)
    again = client.get(f"/avatar/{md5(b'a@example.com').hexdigest()}.svg").get_data(as_text=True)
    assert a != b
    assert a == again


@pytest.mark.parametrize("size, shown", [("4", 16), ("100000", 512), ("big", 80)])
def test_avatar_size_is_kept_within_bounds(client, app, size, shown):
    digest = md5(b"a@example.com").hexdigest()
    svg = client.get(f"/avatar/{digest}.svg?size={size}").get_data(as_text=True)
    assert f'width="{shown}"' in svg


@pytest.mark.parametrize("digest", ["nothex" * 5 + "ab", "abc", "A" * 32])
def test_avatar_with_a_bad_digest_is_not_found(client, app, digest):
    assert client.get(f"/avatar/{digest}.svg").status_code == 404


def test_a_logged_out_visitor_is_sent_to_login_from_every_page(client, user):
    login(client)
    client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})
    for url in ("/index", "/explore", "/user/susan", "/edit_profile", "/messages"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.location.startswith("/auth/login"), url
