"""Links that leave the site are built from PUBLIC_BASE_URL, never from the request's Host: a
forged Host on the reset form must not put an attacker's host in bob's mail (the token would
go there). In production a request for a host that is not the site's is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import render_template
from jinja2 import StrictUndefined

from app import db
from app import tasks as _worker_tasks  # noqa: F401  (see tests/test_email.py)
from app.exports import delivery
from app.exports.actions import start_export
from app.imports import importer
from app.models import Export, Import, TaskStatus
from tests.conftest import CSRF, browser, make_user, run_jobs_in_process
from tests.test_email import reset_with_link

BASE = "https://microblog.example.org/site"
FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
          "X-Forwarded-Proto": "http", "Forwarded": "host=evil.example"}
MAIL_TEMPLATES = Path(__file__).resolve().parent.parent / "app" / "templates" / "email"
LINKS = re.compile(r"https?://[^\s\"'<>]+")


@pytest.fixture
def config_overrides():
    return {"PUBLIC_BASE_URL": BASE}


def test_reset_mail_requested_with_a_forged_host_links_to_the_configured_site(
        smtp_server, app, client):
    make_user("bob", password="bob's old password")

    # The attacker's own session, all of it on the forged host (its cookies are that host's).
    page = client.get("/auth/reset_password_request", headers=FORGED).get_data(as_text=True)
    response = client.post("/auth/reset_password_request", headers=FORGED, data={
        "email": "bob@example.com", "csrf_token": CSRF.search(page).group(1)
        or CSRF.search(page).group(2)})
    assert response.status_code == 302
    run_jobs_in_process(app)

    [mail] = smtp_server.handler_ref.messages
    for part in ("plain", "html"):
        body = mail.get_body(preferencelist=(part,)).get_content()
        assert "evil.example" not in body
        links = LINKS.findall(body)
        assert links and all(link.startswith(BASE + "/auth/reset_password/") for link in links)
    # Bob's link works on the real site (its path under the base).
    path = LINKS.search(mail.get_body(preferencelist=("plain",)).get_content()).group(0)
    response = reset_with_link(browser(app), path.removeprefix(BASE), "bob's new password")
    assert response.location == "/auth/login", response.get_data(as_text=True)


def _every_mail_context(app) -> dict:
    """The variables every mail template is rendered with, taken from the code that sends
    them. A new template needing something else fails the sweep (StrictUndefined) until it is
    added here."""
    user = make_user("bob")
    export = start_export(user, "json")
    run_jobs_in_process(app)
    export = db.session.get(Export, export.id)
    assert export.status == TaskStatus.FINISHED
    imp = Import(user_id=user.id, stage=Import.IMPORT, imported=2,
                 skipped_json='{"boost": 1}')
    db.session.add(imp)
    db.session.commit()
    return {"token": user.get_reset_password_token(),
            **delivery.mail_context(export, attached=False),
            **importer.mail_context(imp, importer.summary(imp))}


def test_every_mail_template_links_only_to_the_configured_base(app):
    templates = sorted(p.name for p in MAIL_TEMPLATES.iterdir() if p.is_file())
    assert "reset_password.txt" in templates and "export_posts.html" in templates
    context = _every_mail_context(app)
    app.jinja_env.undefined = StrictUndefined
    checked = 0
    for name in templates:
        with app.test_request_context("/auth/reset_password_request", method="POST",
                                      base_url="http://evil.example/", headers=FORGED):
            body = render_template(f"email/{name}", **context)
        assert "evil.example" not in body, name
        for link in LINKS.findall(body):
            assert link.startswith(BASE + "/"), (name, link)
            checked += 1
    assert checked >= len(templates)  # every template has links, and they were looked at


@pytest.mark.parametrize("host, status", [
    ("evil.example", 400),
    ("evil.example:443", 400),
    ("microblog.example.org.evil.example", 400),
    ("microblog.example.org", 200),
    ("microblog.example.org:8443", 200),
    ("www.microblog.example.org", 200),  # from TRUSTED_HOSTS
    ("127.0.0.1:5000", 200),  # the health checks of Docker and compose
])
def test_production_answers_only_its_own_host_names(database, redis_server, host, status):
    from app import create_app
    from tests.conftest import config_for_tests

    app = create_app(config_for_tests(
        MICROBLOG_ENV="production", SECRET_KEY="a production secret", PUBLIC_BASE_URL=BASE,
        EXTRA_TRUSTED_HOSTS=["www.microblog.example.org"]))
    client = app.test_client()
    for path, accept in [("/auth/reset_password_request", "text/html"),
                         ("/auth/login", "application/json"), ("/nowhere", "text/html")]:
        response = client.get(path, headers={"Host": host, "Accept": accept})
        expected = 404 if path == "/nowhere" and status == 200 else status
        assert response.status_code == expected, (path, response.status_code)
    if status == 400:
        assert response.get_data(as_text=True) == "This site does not answer to that host name."
        assert client.post("/auth/reset_password_request", headers={"Host": host},
                           data={"email": "bob@example.com"}).status_code == 400


def test_development_answers_any_host(app, client):
    assert app.config["TRUSTED_HOSTS"] is None
    assert client.get("/auth/login", headers={"Host": "evil.example"}).status_code == 200


def test_nothing_builds_a_url_from_the_request_host():
    """Absolute URLs come from app/urls.py only: none of the ways to take the request's host."""
    request_host = re.compile(r"_external\s*=\s*True|host_url|url_root|request\.host\b"
                              r"|X-Forwarded-Host|HTTP_HOST")
    app_dir = MAIL_TEMPLATES.parent.parent
    found = [f"{path.relative_to(app_dir.parent)}:{number}: {line.strip()}"
             for path in sorted(app_dir.rglob("*"))
             if path.suffix in {".py", ".html", ".txt"} and path.name != "urls.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if request_host.search(line)]
    assert found == []
