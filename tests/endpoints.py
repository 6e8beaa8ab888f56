"""Every endpoint of the app, classified by who may reach it, with how to build its URL for
the objects of one user (alice). The authorisation sweep (test_authz.py), the CSRF sweep
(test_csrf.py) and the fuzzer (test_fuzz.py) walk `app.url_map` and look each endpoint up here:
an endpoint missing from this table fails test_authz, so a new route must be classified before
it ships."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from flask import url_for
from werkzeug.security import generate_password_hash

PUBLIC = "public"    # anyone; names no private object (or the URL itself is the credential)
MEMBERS = "members"  # login required; the visitor's own data, or what every member may see
OWNER = "owner"      # login required; names an object of one user: anyone else gets a 404
ADMIN = "admin"      # operators only: everyone else, anonymous included, gets a 404
# The token API (/api/): a bearer token authenticates, never the session cookie, so there is
# no CSRF token to check (test_csrf and test_fuzz leave these to test_api_authz.py and to
# Schemathesis). A read token gets a 403 from every method but GET; no token a 401.
API_PUBLIC = "api-public"  # no token needed: the document, its page, POST /api/tokens (Basic)
API = "api"                # a token: the caller's own data, or what every member may see
API_OWNER = "api-owner"    # a token; names an object of one user: another user's token: 404
API_KINDS = {API_PUBLIC, API, API_OWNER}

PASSWORD = "correct horse battery"
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class World:
    """Two users and one object of each kind that belongs to alice."""

    alice: object
    bob: object
    post: object
    message: object
    task: object
    export: object     # a finished export of alice's, its file in export storage
    imp: object        # a finished import of alice's, with a problem item in its report
    mail: str          # file name of a mail to alice in the local outbox
    api_token: object  # a personal access token of alice's (ApiToken), named with the marker
    marker: str        # text that appears only in alice's private objects

    @property
    def reset_token(self) -> str:
        return self.alice.get_reset_password_token()


@dataclass(frozen=True)
class Endpoint:
    kind: str
    url: Callable[[World], str]
    why: str = ""


def _url(endpoint: str, **args: Callable[[World], object]) -> Callable[[World], str]:
    return lambda w: url_for(endpoint, **{k: f(w) for k, f in args.items()})


def _alice(w: World) -> str:
    return w.alice.username


def _export(w: World) -> str:
    return w.export.id


def _import(w: World) -> str:
    return w.imp.id


ENDPOINTS: dict[str, Endpoint] = {
    "static": Endpoint(PUBLIC, lambda w: url_for("static", filename="js/microblog.js")),
    "bootstrap.static": Endpoint(
        PUBLIC, lambda w: url_for("bootstrap.static", filename="css/bootstrap.min.css")),
    "main.avatar": Endpoint(PUBLIC, lambda w: w.alice.avatar(32),
                            "an identicon of a hash: says nothing about its owner"),
    "main.health": Endpoint(PUBLIC, _url("main.health")),
    "main.favicon": Endpoint(PUBLIC, _url("main.favicon")),
    "auth.login": Endpoint(PUBLIC, _url("auth.login")),
    "auth.register": Endpoint(PUBLIC, _url("auth.register")),
    "auth.logout": Endpoint(PUBLIC, _url("auth.logout")),
    "auth.reset_password_request": Endpoint(PUBLIC, _url("auth.reset_password_request")),
    "auth.change_password": Endpoint(MEMBERS, _url("auth.change_password"), "the visitor's own"),
    "auth.reset_password": Endpoint(
        PUBLIC, _url("auth.reset_password", token=lambda w: w.reset_token),
        "the signed token in the URL is the credential"),
    "monitoring.metrics": Endpoint(
        PUBLIC, _url("monitoring.metrics"),
        "loopback (the test client's address) is METRICS_ALLOW's default; the other access "
        "rules are in test_metrics.py"),
    "admin.index": Endpoint(ADMIN, _url("admin.index")),
    "admin.jobs_page": Endpoint(ADMIN, _url("admin.jobs_page")),
    "admin.task": Endpoint(ADMIN, _url("admin.task", task_id=lambda w: w.task.id)),
    "admin.task_action": Endpoint(
        ADMIN, _url("admin.task_action", task_id=lambda w: w.task.id, action=lambda w: "cancel")),
    "admin.purge": Endpoint(ADMIN, _url("admin.purge")),
    "main.index": Endpoint(MEMBERS, _url("main.index")),
    "main.explore": Endpoint(MEMBERS, _url("main.explore")),
    "main.messages": Endpoint(MEMBERS, _url("main.messages"), "the visitor's own inbox"),
    "main.notifications": Endpoint(MEMBERS, _url("main.notifications"), "the visitor's own"),
    "live.stream": Endpoint(MEMBERS, _url("live.stream"), "the visitor's own events"),
    "main.edit_profile": Endpoint(MEMBERS, _url("main.edit_profile"), "the visitor's own"),
    "exports.export_posts": Endpoint(MEMBERS, _url("exports.export_posts"), "the visitor's own"),
    "main.user": Endpoint(MEMBERS, _url("main.user", username=_alice),
                          "profiles are shown to every member"),
    "main.user_popup": Endpoint(MEMBERS, _url("main.user_popup", username=_alice),
                                "profiles are shown to every member"),
    "main.follow": Endpoint(MEMBERS, _url("main.follow", username=_alice)),
    "main.unfollow": Endpoint(MEMBERS, _url("main.unfollow", username=_alice)),
    "main.send_message": Endpoint(MEMBERS, _url("main.send_message", recipient=_alice)),
    "outbox.index": Endpoint(MEMBERS, _url("outbox.index"), "lists only the visitor's mail"),
    "exports.index": Endpoint(MEMBERS, _url("exports.index"), "lists only the visitor's exports"),
    "imports.index": Endpoint(MEMBERS, _url("imports.index"), "lists only the visitor's imports"),
    "settings.tokens": Endpoint(MEMBERS, _url("settings.tokens"),
                                "lists only the visitor's tokens"),
    "main.task_status": Endpoint(OWNER, _url("main.task_status", task_id=lambda w: w.task.id)),
    "main.dismiss_task": Endpoint(OWNER,
                                  _url("main.dismiss_task", task_id=lambda w: w.task.id)),
    "exports.download": Endpoint(OWNER, _url("exports.download", export_id=_export)),
    "exports.cancel": Endpoint(OWNER, _url("exports.cancel", export_id=_export)),
    "exports.retry": Endpoint(OWNER, _url("exports.retry", export_id=_export)),
    "exports.delete": Endpoint(OWNER, _url("exports.delete", export_id=_export)),
    "imports.show": Endpoint(OWNER, _url("imports.show", import_id=_import)),
    "imports.confirm": Endpoint(OWNER, _url("imports.confirm", import_id=_import)),
    "imports.cancel": Endpoint(OWNER, _url("imports.cancel", import_id=_import)),
    "imports.report_csv": Endpoint(OWNER, _url("imports.report_csv", import_id=_import)),
    "settings.revoke_token": Endpoint(
        OWNER, _url("settings.revoke_token", token_id=lambda w: w.api_token.id)),
    "outbox.message": Endpoint(OWNER, _url("outbox.message", name=lambda w: w.mail)),
    "outbox.message_html": Endpoint(OWNER, _url("outbox.message_html", name=lambda w: w.mail)),
    "outbox.attachment": Endpoint(
        OWNER, _url("outbox.attachment", name=lambda w: w.mail, index=lambda w: 0)),
    "api-docs.openapi_json": Endpoint(API_PUBLIC, _url("api-docs.openapi_json")),
    "api_docs.page": Endpoint(API_PUBLIC, _url("api_docs.page")),
    "api_docs.asset": Endpoint(API_PUBLIC, _url("api_docs.asset", name=lambda w: "swagger-ui.css")),
    "api.posts.posts": Endpoint(API, _url("api.posts.posts"), "the caller's feed, or everyone's"),
    "api.posts.new_post": Endpoint(API, _url("api.posts.new_post")),
    "api.events.stream": Endpoint(API, _url("api.events.stream"), "the caller's own events"),
    "api.tokens.new_token": Endpoint(API_PUBLIC, _url("api.tokens.new_token"),
                                     "HTTP Basic: the username and password are the credential"),
    "api.tokens.revoke_token": Endpoint(API, _url("api.tokens.revoke_token"),
                                        "the token it is sent with (any scope: a read token "
                                        "may revoke itself)"),
    "api.users.me": Endpoint(API, _url("api.users.me")),
    "api.users.user": Endpoint(API, _url("api.users.user", user_id=lambda w: w.alice.id),
                               "profiles are shown to every member"),
    "api.exports.start": Endpoint(API, _url("api.exports.start")),
    "api.exports.history": Endpoint(API, _url("api.exports.history"), "the caller's own"),
    "api.exports.get_export": Endpoint(API_OWNER, _url("api.exports.get_export",
                                                       export_id=_export)),
    "api.exports.delete": Endpoint(API_OWNER, _url("api.exports.delete", export_id=_export)),
    "api.exports.download": Endpoint(API_OWNER, _url("api.exports.download",
                                                     export_id=_export)),
    "api.exports.cancel": Endpoint(API_OWNER, _url("api.exports.cancel", export_id=_export)),
    "api.exports.retry": Endpoint(API_OWNER, _url("api.exports.retry", export_id=_export)),
    "api.imports.upload": Endpoint(API, _url("api.imports.upload")),
    "api.imports.history": Endpoint(API, _url("api.imports.history"), "the caller's own"),
    "api.imports.get_import": Endpoint(API_OWNER, _url("api.imports.get_import",
                                                       import_id=_import)),
    "api.imports.confirm": Endpoint(API_OWNER, _url("api.imports.confirm", import_id=_import)),
    "api.imports.cancel": Endpoint(API_OWNER, _url("api.imports.cancel", import_id=_import)),
    "api.imports.report_csv": Endpoint(API_OWNER, _url("api.imports.report_csv",
                                                       import_id=_import)),
    "api.tasks.get_task": Endpoint(API_OWNER, _url("api.tasks.get_task",
                                                   task_id=lambda w: w.task.id)),
}


def fast_user(username: str, password: str = PASSWORD):
    """A user whose password hash is cheap to check (the sweeps log in many times)."""
    from app import db
    from app.models import User

    user = User(username=username, email=f"{username}@example.com")
    user.password_hash = generate_password_hash(password, method="pbkdf2:sha256:1000")
    db.session.add(user)
    db.session.commit()
    return user


def build_world(app) -> World:
    """alice and bob; alice has a post, a message from bob, a finished task, the finished
    export it made (its file in export storage), a finished import, a mail and an API token."""
    from app import db
    from app.email import send_email
    from app.models import ApiToken, Message, Post, Task, TaskStatus

    marker = "alice-private-7f3a"
    alice, bob = fast_user("alice"), fast_user("bob")
    post = Post(body=f"post {marker}", author=alice)
    message = Message(author=bob, recipient=alice, body=f"message {marker}")
    task = Task(id="0f8e4a1c-task-of-alice-0000000000000", name="export_posts",
                description=f"task {marker}", user=alice, complete=True,
                status=TaskStatus.FINISHED, progress=100)
    db.session.add_all([post, message, task])
    api_token, _ = ApiToken.issue(alice, f"token {marker}", "read write", None)
    db.session.commit()
    export = finished_export(alice, task, marker)
    imp = finished_import(alice, marker)
    send_email(f"Subject {marker}", sender="admin@microblog.example", recipients=[alice.email],
               text_body=f"text {marker}", html_body=f"<p>html {marker}</p>",
               attachments=[("posts.json", "application/json",
                             f'{{"posts": ["{marker}"]}}'.encode())], sync=True)
    mails = sorted((Path(app.instance_path) / "outbox").glob("*.eml"))
    return World(alice=alice, bob=bob, post=post, message=message, task=task, export=export,
                 imp=imp, mail=mails[-1].name, api_token=api_token, marker=marker)


def finished_export(user, task, marker: str):
    """A finished JSON export of `user`'s, made by `task`, whose file (and file name) hold
    `marker`. The file is stored under a key of its own, at the top of the storage folder."""
    from datetime import timedelta

    from app import db
    from app.exports.storage import get_storage
    from app.models import Export, utcnow

    content = f'{{"posts": ["{marker}"]}}\n'.encode()
    export = Export(user_id=user.id, format="json", filename=f"posts-{marker}.json",
                    task_id=task.id, storage_key=f"world-{marker}.json", posts_count=1,
                    size=len(content), finished_at=utcnow(),
                    expires_at=utcnow() + timedelta(days=7))
    with get_storage().writer(export.storage_key) as out:
        out.write(content)
    db.session.add(export)
    db.session.commit()
    return export


def finished_import(user, marker: str):
    """A finished import of `user`'s, made by a task of its own, whose file name (on its
    page) and one failed item (in its report) hold `marker`. Its file is already deleted,
    as a finished import's is."""
    import json

    from app import db
    from app.models import Import, ImportProblem, Task, TaskStatus, utcnow

    task = Task(id="0f8e4a1c-import-of-alice-00000000000", name="import_posts",
                description="Importing posts...", user_id=user.id, complete=True,
                status=TaskStatus.FINISHED, progress=100)
    db.session.add(task)
    imp = Import(user_id=user.id, stage=Import.IMPORT, kind="mastodon",
                 filename=f"archive-{marker}.zip", size=1234, task_id=task.id, position=2,
                 imported=1, failed=1, skipped_json=json.dumps({"boost": 1}),
                 preview_json=json.dumps({"kind": "mastodon", "posts": 2, "samples": []}),
                 confirmed_at=utcnow(), finished_at=utcnow())
    db.session.add(imp)
    db.session.flush()
    db.session.add(ImportProblem(import_id=imp.id, outcome="failed", item=2,
                                 original_id=f"https://social.example/{marker}",
                                 reason="no `published`"))
    db.session.commit()
    return imp


def login_as(client, username: str, password: str = PASSWORD) -> None:
    from tests.conftest import csrf_token

    forget_request_globals()
    token = csrf_token(client, "/auth/login")
    response = client.post("/auth/login", data={
        "username": username, "password": password, "csrf_token": token})
    assert response.status_code == 302 and "/auth/login" not in response.location, \
        f"could not log in as {username}: {response.status_code} {response.location}"


def state_changing_rules(app) -> list:
    return sorted((r for r in app.url_map.iter_rules() if r.methods & STATE_CHANGING),
                  key=lambda r: r.rule)


def snapshot(skip_columns: frozenset[str] = frozenset({"user.last_seen"})) -> dict:
    """Every row of every table (the ORM's view is flushed first): equal snapshots mean
    nothing was saved. `user.last_seen` moves on any visit and is left out."""
    from app import db

    db.session.expire_all()
    state = {}
    for table in db.metadata.sorted_tables:
        columns = [c for c in table.columns if f"{table.name}.{c.name}" not in skip_columns]
        rows = db.session.execute(sa.select(*columns)).all()
        state[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return state


def forget_request_globals() -> None:
    """The `app` fixture keeps one app context for the whole test, and requests reuse it, so
    what a request caches in `g` (Flask-Login's user, Flask-WTF's CSRF token) would outlive
    it: drop them, so that the next request, maybe of another client, starts from its own
    session cookie."""
    from flask import g

    g.pop("_login_user", None)
    g.pop("csrf_token", None)


def logged_in_as(client, username: str) -> bool:
    """Whether the client's session is a login as `username` (the profile link in the nav)."""
    forget_request_globals()
    html = client.get(url_for("main.explore")).get_data(as_text=True)
    return f'href="/user/{username}"' in html and "Logout" in html
