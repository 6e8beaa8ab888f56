"""Mail end to end: the password reset mail goes out from a background job, through a real
SMTP server (or the local outbox when MAIL_SERVER is unset), and its link works once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from redis import Redis

from app import db
from app import tasks as _worker_tasks  # noqa: F401  (imported early: see the note below)
from app.email import send_email
from config import Config
from tests.conftest import csrf_token, login, make_user, queues_on, run_jobs_in_process


def mail_queue(app):
    return app.job_queues[app.config["MAIL_QUEUE"]]

# app.tasks builds the worker's app and pushes its context when it is first imported. Importing
# it with this module, before any test pushes its own context, keeps that context at the bottom
# of the stack; first imported by the in-process worker during a test, it would sit on top of the
# test's context and break its teardown.

LINK = re.compile(re.escape(Config.PUBLIC_BASE_URL) + r"(/auth/reset_password/[\w.-]+)")


def request_reset(client, email, **headers):
    token = csrf_token(client, "/auth/reset_password_request")
    return client.post("/auth/reset_password_request", data={
        "email": email, "csrf_token": token}, headers=headers)


def reset_with_link(client, path, password):
    token = csrf_token(client, path)
    return client.post(path, data={"password": password, "password2": password,
                                   "csrf_token": token})


def can_log_in(client, password) -> bool:
    response = client.post("/auth/login", data={
        "username": "susan", "password": password, "csrf_token": csrf_token(client)})
    logged_in = response.location == "/index"
    if logged_in:
        client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})
    return logged_in


def outbox_files(app) -> list[Path]:
    return sorted((Path(app.instance_path) / "outbox").glob("*.eml"))


# --------------------------------------------------------------------------- through SMTP

def test_password_reset_end_to_end_through_the_smtp_server(smtp_server, app, client):
    received = smtp_server.handler_ref.messages
    make_user()

    response = request_reset(client, "Susan@Example.com")
    assert response.location == "/auth/login"
    assert "Check your email for the instructions to reset your password" in client.get(
        "/auth/login").get_data(as_text=True)
    # The request only queued the mail; a worker sends it.
    assert received == []
    assert mail_queue(app).count == 1

    run_jobs_in_process(app)
    assert len(received) == 1
    mail = received[0]
    assert mail["Subject"] == "[Microblog] Reset Your Password"
    assert mail["To"] == "susan@example.com"
    assert mail["From"] == app.config["ADMINS"][0]
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Dear susan," in text
    path = LINK.search(text).group(1)
    assert LINK.search(html).group(1) == path
    assert not outbox_files(app)  # with a mail server nothing is kept locally

    page = client.get(path)
    assert page.status_code == 200
    assert "Reset Your Password" in page.get_data(as_text=True)
    response = reset_with_link(client, path, "my new password")
    assert response.location == "/auth/login"
    assert "Your password has been reset." in client.get("/auth/login").get_data(as_text=True)

    assert not can_log_in(client, "correct horse battery")
    assert can_log_in(client, "my new password")

    # The link has done its job.
    assert client.get(path).status_code == 302
    assert "The password reset link is invalid or has expired." in client.get(
        "/auth/login").get_data(as_text=True)
    response = client.post(path, data={
        "password": "third password", "password2": "third password",
        "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert not can_log_in(client, "third password")


def test_no_mail_for_an_unknown_address_and_the_same_answer(smtp_server, app, client):
    make_user()
    response = request_reset(client, "stranger@example.com")
    assert response.location == "/auth/login"
    assert "Check your email for the instructions to reset your password" in client.get(
        "/auth/login").get_data(as_text=True)
    assert mail_queue(app).count == 0
    run_jobs_in_process(app)
    assert smtp_server.handler_ref.messages == []


@pytest.mark.parametrize("email, message", [
    ("", "This field is required."),
    ("not an address", "Invalid email address."),
])
def test_reset_request_with_a_bad_address_is_refused(smtp_server, app, client, email, message):
    make_user()
    response = request_reset(client, email)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert mail_queue(app).count == 0


def test_reset_request_without_csrf_sends_nothing(smtp_server, app, client):
    make_user()
    response = client.post("/auth/reset_password_request", data={"email": "susan@example.com"})
    assert response.status_code == 400
    assert mail_queue(app).count == 0


def test_mail_is_sent_right_away_when_the_job_queue_is_down(smtp_server, app):
    queues_on(app, Redis.from_url("unix://" + str(Path(app.instance_path) / "no-redis-here.sock")))
    send_email("Queue down", sender="admin@microblog.example", recipients=["a@example.com"],
               text_body="still delivered", html_body="<p>still delivered</p>")
    received = smtp_server.handler_ref.messages
    assert [m["Subject"] for m in received] == ["Queue down"]


def test_mail_with_sync_true_does_not_use_the_queue(smtp_server, app):
    send_email("Right now", sender="admin@microblog.example", recipients=["a@example.com"],
               text_body="body", html_body="<p>body</p>", sync=True)
    assert mail_queue(app).count == 0
    assert [m["Subject"] for m in smtp_server.handler_ref.messages] == ["Right now"]


# --------------------------------------------------------------------------- through the outbox

def test_password_reset_end_to_end_through_the_local_outbox(app, client):
    assert not app.config["MAIL_SERVER"]
    make_user()
    request_reset(client, "susan@example.com")
    assert outbox_files(app) == []  # queued, not yet sent
    run_jobs_in_process(app)
    assert len(outbox_files(app)) == 1

    # The outbox shows mail to its addressee only, once signed in (reading it on a development
    # machine whose password one has forgot: instance/outbox/*.eml on disk).
    assert client.get("/outbox/").location.startswith("/auth/login")
    login(client)
    listing = client.get("/outbox/").get_data(as_text=True)
    assert "[Microblog] Reset Your Password" in listing
    assert "susan@example.com" in listing
    message_link = re.search(r'href="(/outbox/[^"/]+\.eml)"', listing).group(1)

    message = client.get(message_link).get_data(as_text=True)
    assert "Dear susan," in message
    path = LINK.search(message).group(1)
    client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/index")})

    assert reset_with_link(client, path, "outbox password").location == "/auth/login"
    db.session.expire_all()
    assert can_log_in(client, "outbox password")


def test_a_logged_in_user_is_not_asked_for_a_reset(app, client):
    make_user()
    login(client)
    response = client.post("/auth/reset_password_request", data={
        "email": "susan@example.com", "csrf_token": csrf_token(client, "/index")})
    assert response.location == "/index"
    assert mail_queue(app).count == 0


def test_send_email_once_sends_once_and_refuses_a_concurrent_attempt(smtp_server, app):
    import pytest

    from app.email import MailAlreadySending, send_email_once

    fields = dict(subject="s", sender="a@example.com", recipients=["b@example.com"],
                  text_body="t", html_body="<p>t</p>")
    app.redis.set("microblog:mail-sent:k1", "sending")  # another attempt is mid-send
    with pytest.raises(MailAlreadySending):
        send_email_once("k1", **fields)
    assert smtp_server.handler_ref.messages == []
    assert send_email_once("k2", **fields) is True
    assert send_email_once("k2", **fields) is False
    assert len(smtp_server.handler_ref.messages) == 1


def test_a_claim_whose_answer_redis_lost_is_still_this_attempts_own(smtp_server, app,
                                                                    monkeypatch):
    """Redis restarting: the claim's SET landed but its answer was lost with the connection,
    and the worker's client (which rides out outages) sent the SET again, which found the
    claim made. The attempt knows its own claim and sends the mail, once."""
    from app.email import send_email_once
    from app.redis_connection import ride_out_outages

    ride_out_outages(app.redis)  # as in a worker process

    connection_class = app.redis.connection_pool.connection_class
    sent, read = connection_class.send_command, connection_class.read_response
    lost = []

    def send_command(self, *args, **kwargs):
        self._last_command = args
        return sent(self, *args, **kwargs)

    def read_response(self, *args, **kwargs):
        answer = read(self, *args, **kwargs)  # the command was carried out
        command = getattr(self, "_last_command", ())
        if command[:2] == ("SET", "microblog:mail-sent:k5") and not lost:
            lost.append(answer)
            self.disconnect()
            raise redis.ConnectionError("Connection closed by server.")
        return answer

    monkeypatch.setattr(connection_class, "send_command", send_command)
    monkeypatch.setattr(connection_class, "read_response", read_response)
    fields = dict(subject="s", sender="a@example.com", recipients=["b@example.com"],
                  text_body="t", html_body="<p>t</p>")
    assert send_email_once("k5", **fields) is True
    assert lost == [b"OK"]  # the first SET's answer, lost
    assert len(smtp_server.handler_ref.messages) == 1
    assert app.redis.get("microblog:mail-sent:k5") == b"sent"


def test_a_failed_send_releases_its_claim_for_the_retry(dead_smtp_port, app):
    import pytest

    from app.email import send_email_once

    fields = dict(subject="s", sender="a@example.com", recipients=["b@example.com"],
                  text_body="t", html_body="<p>t</p>")
    with pytest.raises(ConnectionRefusedError):
        send_email_once("k3", **fields)
    assert app.redis.get("microblog:mail-sent:k3") is None


# --------------------------------------------------------------------------- streamed attachments

def _streamed_fields(content: bytes, chunk: int) -> dict:
    def chunks():
        for start in range(0, len(content), chunk):
            yield content[start:start + chunk]

    # Lines that start with a dot: SMTP's transparency rule must still apply to the text.
    return dict(subject="s", sender="a@example.com", recipients=["b@example.com"],
                text_body=".hidden?\n..two dots\n.", html_body="<p>t</p>",
                attachments=[("posts.json", "application/json", chunks)])


@pytest.mark.parametrize("size", [0, 56, 57, 58, 57 * 2048 + 1, 300_001])
def test_an_attachment_read_in_chunks_arrives_whole_through_smtp(smtp_server, app, size):
    """An attachment given as a function of chunks (an export's file in storage) is encoded
    as it is sent, never held whole: the server receives the same bytes as with the content
    given at once, whatever the chunks' sizes against base64's 57-byte lines."""
    from app.email import send_email_once

    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    send_email_once(f"stream-{size}", **_streamed_fields(content, chunk=1000))
    (mail,) = smtp_server.handler_ref.messages
    (part,) = list(mail.iter_attachments())
    assert part.get_filename() == "posts.json"
    assert part.get_content_type() == "application/json"
    assert part.get_content() == content
    text = mail.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith(".hidden?\n..two dots\n.")


def test_an_attachment_read_in_chunks_is_written_whole_to_the_outbox(app):
    import email
    import email.policy

    from app.email import send_email

    content = b'{"posts": []}' * 10_000
    send_email(**_streamed_fields(content, chunk=4096), sync=True)
    (path,) = outbox_files(app)
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    (part,) = list(mail.iter_attachments())
    assert part.get_content() == content


def test_an_attachment_given_as_chunks_can_be_queued(smtp_server, app):
    """A mail job carries bytes: chunks are read before the mail is queued."""
    from app.email import send_email

    content = b"0123456789" * 1000
    send_email(**_streamed_fields(content, chunk=333))
    run_jobs_in_process(app)
    (mail,) = smtp_server.handler_ref.messages
    (part,) = list(mail.iter_attachments())
    assert part.get_content() == content
