"""The local outbox: with no MAIL_SERVER every email is kept under instance/outbox and the
/outbox pages show each signed-in user the mail sent to them; with a MAIL_SERVER the pages do
not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.email import send_email
from tests.conftest import csrf_token, login, make_user

# The outbox is files under instance/outbox, whatever the database: CI runs it once
# (SQLite).
pytestmark = pytest.mark.once

JSON_DATA = b'{"posts": [{"body": "hi", "timestamp": "2024-05-01T12:00:00Z"}]}'


def send(subject="Hello there", to="susan@example.com", text="plain body",
         html="<p>html <b>body</b></p>", attachments=None):
    send_email(subject, sender="admin@microblog.example", recipients=[to], text_body=text,
               html_body=html, attachments=attachments, sync=True)


def outbox_files(app) -> list[Path]:
    return sorted((Path(app.instance_path) / "outbox").glob("*.eml"))


def message_links(html: str) -> list[str]:
    return re.findall(r'href="(/outbox/[^"/]+\.eml)"', html)


def test_empty_outbox_says_so(client, logged_in, app):
    response = client.get("/outbox/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "The outbox is empty." in html
    assert "No mail server is configured" in html


def test_outbox_is_in_the_navigation_of_signed_in_users_when_mail_stays_local(client, app):
    assert 'href="/outbox/"' not in client.get("/auth/login").get_data(as_text=True)
    make_user()
    login(client)
    assert 'href="/outbox/"' in client.get("/index").get_data(as_text=True)


def test_sent_mail_is_listed_with_recipient_subject_and_attachments(client, logged_in, app):
    send(attachments=[("posts.json", "application/json", JSON_DATA)])
    assert len(outbox_files(app)) == 1
    html = client.get("/outbox/").get_data(as_text=True)
    assert "Hello there" in html
    assert "susan@example.com" in html
    assert "posts.json" in html
    assert message_links(html) == [f"/outbox/{outbox_files(app)[0].name}"]


def test_outbox_lists_newest_first(client, logged_in, app):
    send(subject="older mail")
    send(subject="newer mail")
    html = client.get("/outbox/").get_data(as_text=True)
    assert html.index("newer mail") < html.index("older mail")


def test_a_message_page_shows_headers_text_and_attachments(client, logged_in, app):
    send(text="Dear susan, 안녕하세요\n<script>not run</script>",
         attachments=[("posts.json", "application/json", JSON_DATA)])
    link = message_links(client.get("/outbox/").get_data(as_text=True))[0]
    response = client.get(link)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Hello there" in html
    assert "admin@microblog.example" in html
    assert "susan@example.com" in html
    assert "Dear susan, 안녕하세요" in html
    assert "&lt;script&gt;not run&lt;/script&gt;" in html
    assert f'href="{link}/attachments/0"' in html
    assert f'src="{link}/html"' in html


def test_the_html_body_is_served_sandboxed(client, logged_in, app):
    send(html="<p>html <b>body</b></p>")
    link = message_links(client.get("/outbox/").get_data(as_text=True))[0]
    response = client.get(f"{link}/html")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<p>html <b>body</b></p>" in response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "sandbox" in csp
    assert "default-src 'none'" in csp


def test_attachments_download_with_their_name_type_and_bytes(client, logged_in, app):
    send(attachments=[("posts.json", "application/json", JSON_DATA),
                      ("notes.txt", "text/plain", "héllo 한국어".encode())])
    link = message_links(client.get("/outbox/").get_data(as_text=True))[0]

    first = client.get(f"{link}/attachments/0")
    assert first.status_code == 200
    assert first.mimetype == "application/json"
    assert first.headers["Content-Disposition"] == "attachment; filename=posts.json"
    assert first.data == JSON_DATA

    second = client.get(f"{link}/attachments/1")
    assert second.mimetype == "text/plain"
    assert "notes.txt" in second.headers["Content-Disposition"]
    assert second.data.decode() == "héllo 한국어"

    assert client.get(f"{link}/attachments/2").status_code == 404


def test_a_message_without_html_has_no_html_page(client, logged_in, app):
    send(html=None)
    link = message_links(client.get("/outbox/").get_data(as_text=True))[0]
    assert "<iframe" not in client.get(link).get_data(as_text=True)
    assert client.get(f"{link}/html").status_code == 404


@pytest.mark.parametrize("name", [
    "..",
    "%2e%2e",
    "..%2F..%2Fapp.db",
    "..%2f..%2fconfig.py",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....eml",
    "20240101T000000-deadbeef.eml",  # well formed, but not there
    "20240101T000000-deadbeef.eml%0A",
    "20240101T000000-deadbeef.eml.part",
    "app.db",
])
def test_names_that_are_not_outbox_messages_are_not_found(client, logged_in, app, name):
    send()
    for suffix in ("", "/html", "/attachments/0"):
        assert client.get(f"/outbox/{name}{suffix}").status_code == 404, suffix


def test_a_stray_file_in_the_outbox_does_not_break_the_list(client, logged_in, app):
    send()
    (Path(app.instance_path) / "outbox" / "stray.eml").write_text("Subject: stray\n\nx")
    response = client.get("/outbox/")
    assert response.status_code == 200
    assert "Hello there" in response.get_data(as_text=True)
    assert client.get("/outbox/stray.eml").status_code == 404


@pytest.fixture
def mail_server_configured(config_overrides):
    config_overrides["MAIL_SERVER"] = "mail.invalid"


def test_the_outbox_does_not_exist_when_a_mail_server_is_set(mail_server_configured, client,
                                                              app):
    # Even a message left over from before is not shown.
    outbox = Path(app.instance_path) / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "20240101T000000000000-deadbeef.eml").write_text("Subject: old\n\nsecret")
    assert client.get("/outbox/").status_code == 404
    assert client.get("/outbox/20240101T000000000000-deadbeef.eml").status_code == 404
    assert client.get("/outbox/20240101T000000000000-deadbeef.eml/html").status_code == 404
    assert "/outbox/" not in client.get("/auth/login").get_data(as_text=True)


def test_the_outbox_pages_are_never_served_in_production(client, app):
    """Its pages show password-reset links: a deployment without MAIL_SERVER must not serve them."""
    app.config["MICROBLOG_ENV"] = "production"
    assert client.get("/outbox/").status_code == 404
    assert "/outbox/" not in client.get("/auth/login").get_data(as_text=True)


# --------------------------------------------------------------------------- who reads what

def sign_in_as(client, username: str):
    """Sign out whoever is signed in, then sign in as `username`."""
    if client.get("/index").status_code == 200:
        client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})
    login(client, username)
    return client


def message_urls(app, index: int = 0) -> list[str]:
    link = f"/outbox/{outbox_files(app)[index].name}"
    return [link, f"{link}/html", f"{link}/attachments/0"]


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, app):
    make_user()
    send(subject="Reset your password", text="secret reset link",
         attachments=[("posts.json", "application/json", JSON_DATA)])
    for url in ["/outbox/", *message_urls(app)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.location.startswith("/auth/login?next="), url
    # Following the redirect: the login form, and nothing of the mail.
    page = client.get("/outbox/", follow_redirects=True).get_data(as_text=True)
    assert 'name="password"' in page
    assert "Reset your password" not in page and "secret reset link" not in page


def test_each_user_sees_only_the_mail_sent_to_them(client, app):
    make_user("susan")
    make_user("bob")
    send(subject="for susan", to="susan@example.com", text="susan's reset link",
         attachments=[("posts.json", "application/json", JSON_DATA)])
    send(subject="for bob", to="Bob <BOB@example.com>", text="bob's reset link",
         attachments=[("posts.json", "application/json", JSON_DATA)])
    send(subject="for nobody here", to="carol@example.com")
    susan_mail, bob_mail = message_urls(app, 0), message_urls(app, 1)

    for username, own, others, theirs in [("susan", susan_mail, bob_mail, "for bob"),
                                          ("bob", bob_mail, susan_mail, "for susan")]:
        sign_in_as(client, username)
        listing = client.get("/outbox/").get_data(as_text=True)
        assert f"for {username}" in listing
        assert theirs not in listing and "for nobody here" not in listing
        assert message_links(listing) == [own[0]]
        assert f"{username}@example.com" in listing.lower()
        for url in own:
            assert client.get(url).status_code == 200, url
        assert f"{username}&#39;s reset link" in client.get(own[0]).get_data(as_text=True)
        # Another user's message answers exactly like one that does not exist.
        missing = client.get("/outbox/20240101T000000-deadbeef.eml")
        for url in others:
            response = client.get(url)
            assert response.status_code == 404, url
            assert response.get_data() == missing.get_data()
            assert theirs not in response.get_data(as_text=True)


def test_mail_with_several_addressees_is_read_by_each_of_them(client, app):
    make_user("susan")
    make_user("bob")
    make_user("dave")
    send_email("to both", sender="admin@microblog.example",
               recipients=["susan@example.com", "bob@example.com"], text_body="hello both",
               html_body=None, sync=True)
    for username, visible in [("susan", True), ("bob", True), ("dave", False)]:
        sign_in_as(client, username)
        assert ("to both" in client.get("/outbox/").get_data(as_text=True)) is visible
        assert client.get(message_urls(app)[0]).status_code == (200 if visible else 404)
