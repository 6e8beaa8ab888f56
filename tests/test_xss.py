"""XSS payloads in usernames, about-me, post bodies, messages and task texts come out inert:
escaped in every page and in the HTML mail, plain data in the /notifications JSON (which the
page's script writes with textContent) and in posts.json (served as an application/json
attachment). A real Chromium loading the pages runs none of them: tests/test_browser.py."""

from __future__ import annotations

import email
import email.policy
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from markupsafe import escape

from app import db
from app.models import Message, Post, Task, TaskStatus, User
from tests.conftest import csrf_token, run_jobs_in_process
from tests.endpoints import PASSWORD, fast_user, login_as

# Escaping happens in the templates and the mail, whatever the database (text in and
# out of each database: test_fuzz.py, in the matrix): CI runs it once (SQLite).
pytestmark = pytest.mark.once

# Each would set window.__xss or open a dialog if it ran.
PAYLOADS = [
    "<script>window.__xss=1</script>",
    '"><img src=x onerror="window.__xss=2">',
    "'><svg onload=window.__xss=3>",
    "javascript:window.__xss=4",
    "</textarea><script>window.__xss=5</script>",
    "{{7*7}} {% print 7*7 %}",
    '<a href="javascript:alert(6)">click</a>',
    "<iframe srcdoc=\"<script>parent.__xss=7</script>\"></iframe>",
]
# Usernames the registration form refuses, but that data from elsewhere (an import, an admin,
# an older rule) could hold: the pages must not trust the form. No "/" (it would not route).
EVIL_NAMES = ['"><img src=x onerror=alert(1)>', "<svg onload=alert(2)>", "{{7*7}}"]


@pytest.fixture
def xss_world(app, client):
    return build_xss_world(client)


def build_xss_world(client) -> dict:
    """alice wrote every payload: posts, messages to bob, her about-me; evil users named
    after payloads posted and wrote to her; she follows them; a task of hers failed with one."""
    from app.models import Notification

    alice, bob = fast_user("alice"), fast_user("bob")
    evil = []
    for i, name in enumerate(EVIL_NAMES):
        user = User(username=name, email=f"evil{i}@example.com", about_me=PAYLOADS[i])
        user.set_password(PASSWORD)
        db.session.add(user)
        evil.append(user)
    db.session.commit()
    for i, user in enumerate(evil):
        alice.follow(user)
        db.session.add(Post(body=f"evil post {i}", author=user))
        db.session.add(Message(author=user, recipient=alice, body=f"evil message {i}"))
    task = Task(id="00000000-xss-task-000000000000000000", name="export_posts",
                description=PAYLOADS[0], user=alice, complete=True,
                status=TaskStatus.FAILED, error=PAYLOADS[1], finished_at=None)
    db.session.add(task)
    db.session.commit()
    db.session.execute(sa.update(Task).values(finished_at=sa.func.now()))
    db.session.add(Notification(name="task_progress", user_id=alice.id, topic=task.id,
                                payload_json=json.dumps(task.to_dict())))
    db.session.commit()

    login_as(client, "alice")
    for payload in PAYLOADS:
        token = csrf_token(client, "/index")
        assert client.post("/index", data={"post": payload, "csrf_token": token}).status_code \
            == 302
        token = csrf_token(client, "/send_message/bob")
        assert client.post("/send_message/bob", data={"message": payload,
                                                      "csrf_token": token}).status_code == 302
    # bob's messages to alice carry the payloads too (alice's inbox is what she reads).
    for payload in PAYLOADS:
        db.session.add(Message(author=bob, recipient=alice, body=payload))
    db.session.commit()
    about = PAYLOADS[4] + PAYLOADS[1]
    token = csrf_token(client, "/edit_profile")
    response = client.post("/edit_profile", data={"username": "alice", "about_me": about,
                                                  "csrf_token": token})
    assert response.status_code == 302
    return {"alice": alice, "bob": bob, "evil": evil, "task": task, "about": about}


def pages(world) -> list[str]:
    evil = [u.username for u in world["evil"]]
    return (["/index", "/explore", "/user/alice", "/user/alice/popup", "/messages",
             "/edit_profile", "/send_message/alice", "/user/bob"]
            + [f"/user/{name}" for name in evil] + [f"/user/{name}/popup" for name in evil])


def _raw_payloads_in(html: str) -> list[str]:
    found = [p for p in PAYLOADS + EVIL_NAMES if "<" in p and p in html]
    if re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", html, re.I):
        found.append("a javascript: URL")
    return found


def test_the_forms_refuse_payload_usernames(client, app):
    for name in EVIL_NAMES + ["<script>x</script>"]:
        token = csrf_token(client, "/auth/register")
        response = client.post("/auth/register", data={
            "username": name, "email": "x@example.com", "password": PASSWORD,
            "password2": PASSWORD, "csrf_token": token})
        assert response.status_code == 200
        assert "Usernames may contain only letters" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_payloads_are_escaped_in_every_page(client, xss_world):
    for url in pages(xss_world):
        response = client.get(url, query_string={"page": 1})
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        assert not _raw_payloads_in(html), f"{url} shows {_raw_payloads_in(html)}"


@pytest.mark.parametrize("url,expected", [
    ("/explore", PAYLOADS[-3:]),           # alice's latest posts (3 a page)
    ("/messages", PAYLOADS[-3:]),          # bob's latest messages
    ("/user/alice", PAYLOADS[-3:] + [PAYLOADS[4] + PAYLOADS[1]]),
    ("/user/alice/popup", [PAYLOADS[4] + PAYLOADS[1]]),
    ("/edit_profile", [PAYLOADS[4] + PAYLOADS[1]]),  # inside the <textarea>
    ("/index", PAYLOADS[-3:]),
])
def test_payloads_are_shown_as_text(client, xss_world, url, expected):
    """The escaped text is there: the payloads were not dropped, they were made harmless."""
    html = client.get(url).get_data(as_text=True)
    for payload in expected:
        assert str(escape(payload)) in html, f"{url} lacks {escape(payload)}"


def test_payload_usernames_are_escaped_where_they_appear(client, xss_world):
    html = client.get("/messages", query_string={"page": 4}).get_data(as_text=True)
    html += client.get("/explore", query_string={"page": 4}).get_data(as_text=True)
    for name in EVIL_NAMES:
        assert str(escape(name)) in html or name not in html
    html = client.get(f"/user/{EVIL_NAMES[0]}").get_data(as_text=True)
    assert f"User: {escape(EVIL_NAMES[0])}" in html
    assert str(escape(PAYLOADS[0])) in html  # that user's about-me


def test_template_syntax_in_user_text_is_not_evaluated(client, xss_world):
    html = client.get("/explore", query_string={"page": 1}).get_data(as_text=True)
    html += client.get("/user/{{7*7}}").get_data(as_text=True)
    assert "{{7*7}} {% print 7*7 %}" in html or "{{7*7}}" in html
    assert "User: {{7*7}}" in html
    assert ">49<" not in html and "49 49" not in html


def test_task_texts_are_escaped_in_the_alert(client, xss_world):
    # An ended task's alert is shown once, and the fixture's own page loads showed it.
    db.session.execute(sa.update(Task).values(dismissed=False))
    db.session.commit()
    html = client.get("/index").get_data(as_text=True)
    assert 'class="alert task-alert' in html
    assert str(escape(PAYLOADS[0])) in html and str(escape(PAYLOADS[1])) in html
    assert not _raw_payloads_in(html)


def test_notifications_json_carries_payloads_as_plain_data(client, xss_world):
    response = client.get("/notifications")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    data = [n["data"] for n in response.get_json() if n["name"] == "task_progress"]
    assert data[0]["description"] == PAYLOADS[0] and data[0]["error"] == PAYLOADS[1]


def test_the_page_script_writes_text_never_html():
    """/notifications data reaches the page only through microblog.js: it must build nodes
    with textContent and never parse strings as HTML or code."""
    script = (Path(__file__).resolve().parent.parent / "app/static/js/microblog.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout('", 'setTimeout("', "jQuery", "$("):
        assert sink not in script, f"microblog.js uses {sink}"
    assert "textContent = data.description" in script
    assert "textContent = data.error" in script


def _outbox_mails(app) -> list[email.message.EmailMessage]:
    mails = []
    for path in sorted((Path(app.instance_path) / "outbox").glob("*.eml")):
        with path.open("rb") as f:
            mails.append(email.message_from_binary_file(f, policy=email.policy.default))
    return mails


def test_the_export_mail_and_posts_json_keep_payloads_inert(app, client):
    user = User(username=EVIL_NAMES[0], email="evil@example.com")
    user.set_password(PASSWORD)
    db.session.add(user)
    db.session.add_all([Post(body=p, author=user) for p in PAYLOADS])
    db.session.commit()
    user.launch_task("export_posts", "Exporting posts...")
    run_jobs_in_process(app)
    (mail,) = _outbox_mails(app)
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert f"Dear {escape(EVIL_NAMES[0])}," in html
    assert not _raw_payloads_in(html)
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_filename() == "posts.json"
    assert attachment.get_content_type() == "application/json"
    data = json.loads(attachment.get_payload(decode=True))
    assert data["user"] == EVIL_NAMES[0]  # data, not HTML: exactly what was written
    assert [p["body"] for p in data["posts"]] == PAYLOADS


def test_posts_json_is_served_as_a_json_attachment(app, client):
    """Opening posts.json from the outbox downloads it; a browser never renders it as HTML."""
    fast_user("alice")
    db.session.add(Post(body=PAYLOADS[0], author=db.session.scalar(sa.select(User))))
    db.session.commit()
    db.session.scalar(sa.select(User)).launch_task("export_posts", "Exporting posts...")
    run_jobs_in_process(app)
    login_as(client, "alice")
    name = sorted((Path(app.instance_path) / "outbox").glob("*.eml"))[0].name
    response = client.get(f"/outbox/{name}/attachments/0")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert json.loads(response.get_data())["posts"][0]["body"] == PAYLOADS[0]


def test_the_password_reset_mail_escapes_the_username(app, client):
    from app.auth.email import send_password_reset_email

    user = User(username=EVIL_NAMES[1], email="evil@example.com")
    db.session.add(user)
    db.session.commit()
    send_password_reset_email(user)
    run_jobs_in_process(app)
    (mail,) = _outbox_mails(app)
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert f"Dear {escape(EVIL_NAMES[1])}," in html
    assert not _raw_payloads_in(html)
