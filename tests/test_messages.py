"""Private messages, the unread-message badge and GET /notifications."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.models import Message, Notification, utcnow
from tests.conftest import csrf_token, login, make_user


def send(client, recipient, body, with_csrf=True):
    data = {"message": body}
    if with_csrf:
        data["csrf_token"] = csrf_token(client, "/index")
    return client.post(f"/send_message/{recipient}", data=data)


def badge(client) -> int | None:
    """The unread count in the navigation bar, or None while it is hidden."""
    html = client.get("/index").get_data(as_text=True)
    match = re.search(r'<span id="message_count" class="([^"]*)">(\d+)</span>', html)
    assert match, "no message badge"
    return None if "d-none" in match.group(1) else int(match.group(2))


def unread_notifications(client, since=None) -> list:
    query = {} if since is None else {"since": since}
    response = client.get("/notifications", query_string=query)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return [n for n in response.get_json() if n["name"] == "unread_message_count"]


def message_rows() -> list[tuple[str, str, str]]:
    db.session.expire_all()
    return [(m.author.username, m.recipient.username, m.body)
            for m in db.session.scalars(sa.select(Message).order_by(Message.id))]


@pytest.fixture
def bob(app):
    return make_user("bob", password="bob's password")


def as_bob(client):
    client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})
    login(client, "bob", "bob's password")
    return client


def test_send_message_page_names_the_recipient(logged_in, bob):
    response = logged_in.get("/send_message/bob")
    assert response.status_code == 200
    assert "Send Message to bob" in response.get_data(as_text=True)


def test_a_sent_message_is_stored_and_reaches_the_recipient(logged_in, bob):
    response = send(logged_in, "bob", "  hi bob  ")
    assert response.status_code == 302
    assert response.location == "/user/bob"
    assert "Your message has been sent." in logged_in.get("/user/bob").get_data(as_text=True)
    assert message_rows() == [("susan", "bob", "hi bob")]

    as_bob(logged_in)
    html = logged_in.get("/messages").get_data(as_text=True)
    assert "hi bob" in html
    assert "susan" in html


def test_the_sender_does_not_see_it_in_their_own_inbox(logged_in, bob):
    send(logged_in, "bob", "for bob only")
    html = logged_in.get("/messages").get_data(as_text=True)
    assert "for bob only" not in html
    assert "No messages yet." in html


def test_html_in_a_message_is_shown_as_text(logged_in, bob):
    send(logged_in, "bob", "<img src=x onerror=alert(1)>")
    html = as_bob(logged_in).get("/messages").get_data(as_text=True)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize("body, message", [
    ("", "This field is required."),
    ("   ", "This field is required."),
    ("x" * 281, "Field must be between 1 and 280 characters long."),
])
def test_an_empty_or_too_long_message_is_refused(logged_in, bob, body, message):
    response = send(logged_in, "bob", body)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert message_rows() == []


def test_a_message_without_csrf_is_refused(logged_in, bob):
    assert send(logged_in, "bob", "hi", with_csrf=False).status_code == 400
    assert message_rows() == []


def test_a_message_to_an_unknown_user_is_not_found(logged_in):
    assert logged_in.get("/send_message/nobody").status_code == 404
    assert send(logged_in, "nobody", "hello?").status_code == 404
    assert message_rows() == []


def test_messages_need_login(client, bob):
    response = client.post("/send_message/bob", data={
        "message": "anonymous", "csrf_token": csrf_token(client)})
    assert response.location.startswith("/auth/login")
    assert client.get("/messages").location.startswith("/auth/login")
    assert client.get("/notifications").location.startswith("/auth/login")
    assert message_rows() == []


def test_messages_are_listed_newest_first(logged_in, bob):
    for body in ("first", "second", "third"):
        send(logged_in, "bob", body)
    html = as_bob(logged_in).get("/messages").get_data(as_text=True)
    assert re.findall(r'<div class="post-body">(.*?)</div>', html) == ["third", "second", "first"]


def test_messages_are_paginated_three_a_page(logged_in, bob):
    for i in range(1, 5):
        send(logged_in, "bob", f"message {i}")
    as_bob(logged_in)
    first = logged_in.get("/messages").get_data(as_text=True)
    assert re.findall(r'<div class="post-body">(.*?)</div>', first) == [
        "message 4", "message 3", "message 2"]
    assert 'href="/messages?page=2"' in first
    second = logged_in.get("/messages?page=2").get_data(as_text=True)
    assert re.findall(r'<div class="post-body">(.*?)</div>', second) == ["message 1"]
    for page in ("3", "0", "-1"):
        assert logged_in.get(f"/messages?page={page}").status_code == 404
    assert logged_in.get("/messages?page=x").status_code == 200


# --------------------------------------------------------------------------- unread count

def test_unread_badge_counts_new_messages_until_the_inbox_is_read(logged_in, bob):
    send(logged_in, "bob", "one")
    send(logged_in, "bob", "two")

    as_bob(logged_in)
    assert badge(logged_in) == 2
    assert [n["data"] for n in unread_notifications(logged_in)] == [2]

    logged_in.get("/messages")
    assert badge(logged_in) is None
    assert [n["data"] for n in unread_notifications(logged_in)] == [0]


def test_unread_count_notification_is_exact_for_every_message(logged_in, bob):
    """The notification (what the page's badge shows while it is open) agrees with the
    badge a fresh page load shows, after each message."""
    for expected in (1, 2, 3):
        send(logged_in, "bob", f"message {expected}")
        db.session.expire_all()
        notification = db.session.scalar(sa.select(Notification).where(
            Notification.name == "unread_message_count"))
        assert notification.get_data() == expected
    as_bob(logged_in)
    assert badge(logged_in) == 3


def test_messages_that_arrive_after_reading_count_as_unread(logged_in, user, bob):
    send(logged_in, "bob", "old")
    as_bob(logged_in).get("/messages")
    assert badge(logged_in) is None
    # The inbox was read a moment ago; a message written after that is new again.
    db.session.add(Message(author=user, recipient=bob, body="new",
                           timestamp=utcnow() + timedelta(seconds=5)))
    db.session.commit()
    assert badge(logged_in) == 1


def test_no_badge_without_messages(logged_in):
    assert badge(logged_in) is None
    assert unread_notifications(logged_in) == []


# --------------------------------------------------------------------------- /notifications

def test_notifications_since_returns_only_newer_ones(logged_in, bob):
    send(logged_in, "bob", "one")
    as_bob(logged_in)
    first = unread_notifications(logged_in)
    assert [n["data"] for n in first] == [1]
    assert set(first[0]) == {"name", "data", "timestamp"}
    assert isinstance(first[0]["timestamp"], float)
    since = first[0]["timestamp"]

    assert unread_notifications(logged_in, since=since) == []
    assert [n["data"] for n in unread_notifications(logged_in, since=since - 1)] == [1]

    logged_in.get("/messages")
    newer = unread_notifications(logged_in, since=since)
    assert [n["data"] for n in newer] == [0]
    assert newer[0]["timestamp"] >= since


def test_notifications_with_a_non_numeric_since_returns_everything(logged_in, bob):
    send(logged_in, "bob", "one")
    as_bob(logged_in)
    assert [n["data"] for n in unread_notifications(logged_in, since="yesterday")] == [1]


def test_notifications_are_private(logged_in, bob):
    send(logged_in, "bob", "one")
    # susan sent it: nothing for her.
    assert unread_notifications(logged_in) == []
