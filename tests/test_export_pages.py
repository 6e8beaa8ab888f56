"""The export centre's pages (/exports) as a member sees them: starting an export in each
format, the refusals (unknown format, one already running, the cooldown), cancel, retry,
delete, the download, and the rules: anonymous visitors go to the login page, another
member's export is a 404 like one that never existed, every POST needs its CSRF token. Jobs
run in this process (run_jobs_in_process); the real worker and browser are in
test_export_browser.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from markupsafe import escape

from app import db
from app.exports import centre
from app.exports.storage import get_storage
from app.models import Export, Task, TaskStatus, utcnow
from tests.conftest import csrf_token, login, run_jobs_in_process
from tests.endpoints import fast_user, forget_request_globals, snapshot

POSTS = ["first post", 'second, with "quotes"', "third <b>post</b>"]


@pytest.fixture
def susan(app):
    from app.models import Post

    user = fast_user("susan")  # a cheap password hash: these tests log in often
    db.session.add_all([Post(body=body, author=user) for body in POSTS])
    db.session.commit()
    return user


def bulk_queue(app):
    """Where exports and imports wait (app/jobs/types.py)."""
    return app.job_queues[app.config["BULK_QUEUE"]]


def _token(client) -> str:
    return csrf_token(client, "/exports")


def _start(client, fmt: str | None = "json", **kwargs):
    data = {"csrf_token": _token(client)}
    if fmt is not None:
        data["format"] = fmt
    return client.post("/exports", data=data, **kwargs)


def _post(client, url: str, **kwargs):
    return client.post(url, data={"csrf_token": _token(client)}, **kwargs)


def _exports() -> list[Export]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Export).order_by(Export.created_at)))


def _flash(response) -> str:
    """The text of the page's flashed messages (after following the redirect)."""
    html = response.get_data(as_text=True)
    return " ".join(re.sub(r"\s+", " ", m) for m in re.findall(
        r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', html, re.S))


def _row(html: str, export: Export) -> str:
    return html.split(f'id="export-{export.id}"')[1].split("</tr>")[0]


def _start_button(html: str) -> str:
    return re.search(r'<button[^>]*id="export-start-button"[^>]*>', html).group(0)


def finished_export(client) -> Export:
    """susan's JSON export, run to the end by an in-process worker."""
    assert _start(client).status_code == 302
    run_jobs_in_process(client.application)
    (export,) = _exports()
    assert export.status == TaskStatus.FINISHED, export.task.error
    return export


def _routes(export_id: str) -> list[tuple[str, str]]:
    base = f"/exports/{export_id}"
    return [("GET", f"{base}/download"), ("POST", f"{base}/cancel"),
            ("POST", f"{base}/retry"), ("GET", f"{base}/delete"), ("POST", f"{base}/delete")]


# --------------------------------------------------------------------------- who may

def test_an_anonymous_visitor_is_sent_to_the_login_page_from_every_route(app, client, susan):
    login(client)
    export = finished_export(client)
    token = _token(client)
    client.post("/auth/logout", data={"csrf_token": token})
    forget_request_globals()
    before = snapshot()
    for method, url in [("GET", "/exports"), ("POST", "/exports"), *_routes(export.id)]:
        response = client.open(url, method=method, data={"csrf_token": token, "format": "csv"})
        assert response.status_code == 302, f"{method} {url}"
        assert response.location.startswith("/auth/login"), f"{method} {url}"
    assert snapshot() == before


def test_another_members_export_is_a_404_like_one_that_never_existed(app, client, susan):
    login(client)
    export = finished_export(client)
    fast_user("mallory")
    client.post("/auth/logout", data={"csrf_token": _token(client)})
    forget_request_globals()
    login(client, "mallory")
    token = _token(client)
    before = snapshot()
    for export_id in (export.id, "no-such-export-0000000000"):
        for method, url in _routes(export_id):
            response = client.open(url, method=method, data={"csrf_token": token})
            assert response.status_code == 404, f"{method} {url}: {response.status_code}"
            assert "Sorry, that page does not exist." in response.get_data(as_text=True)
    assert snapshot() == before
    assert get_storage().exists(export.storage_key)
    # Nor does her list show it.
    assert export.id not in client.get("/exports").get_data(as_text=True)


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(app, client, susan):
    login(client)
    export = finished_export(client)
    before = snapshot()
    for url in ["/exports", *(url for method, url in _routes(export.id) if method == "POST")]:
        response = client.post(url, data={"format": "csv"})
        assert response.status_code == 400, url
        assert "The form expired or was sent from another site" in response.get_data(
            as_text=True)
    assert snapshot() == before
    assert get_storage().exists(export.storage_key)


# --------------------------------------------------------------------------- starting

@pytest.mark.parametrize("fmt,label", [("json", "JSON"), ("csv", "CSV"),
                                       ("activitystreams", "ActivityStreams archive")])
def test_starting_an_export_queues_it_and_shows_it_in_the_history(app, client, susan, fmt,
                                                                   label):
    login(client)
    response = _start(client, fmt, follow_redirects=True)
    assert "Your export has started" in _flash(response)
    (export,) = _exports()
    assert export.format == fmt and export.status == TaskStatus.QUEUED
    assert bulk_queue(app).count == 1
    assert bulk_queue(app).jobs[0].id == export.task_id

    html = response.get_data(as_text=True)
    row = _row(html, export)
    assert f"<td>{label}</td>" in row and "Waiting to start" in row
    assert 'role="progressbar"' in row and "Cancel" in row and "Download" not in row
    assert "disabled" in _start_button(html)
    assert "An export is in progress" in html


def test_an_unknown_or_missing_format_is_refused_with_a_clear_message(app, client, susan):
    login(client)
    response = _start(client, "xml", follow_redirects=True)
    assert "Unknown export format." in _flash(response)
    response = _start(client, None, follow_redirects=True)
    assert "Choose an export format." in _flash(response)
    assert _exports() == [] and bulk_queue(app).count == 0
    assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 0


def test_a_second_export_while_one_runs_is_refused(app, client, susan):
    login(client)
    _start(client, "json")
    response = _start(client, "csv", follow_redirects=True)
    assert "An export task is currently in progress" in _flash(response)
    assert [e.format for e in _exports()] == ["json"]
    assert bulk_queue(app).count == 1


def test_during_the_cooldown_the_button_is_disabled_and_says_when(app, client, susan):
    login(client)
    export = finished_export(client)
    html = client.get("/exports").get_data(as_text=True)
    assert "disabled" in _start_button(html)
    available = export.task.finished_at + timedelta(seconds=app.config["EXPORT_COOLDOWN"])
    when = available.isoformat(timespec="seconds") + "Z"
    assert re.search(r'Next export available at <time class="local-time" datetime="'
                     + re.escape(when), html), html
    # The form's own refusal, for a page that was open before.
    response = _start(client, "csv", follow_redirects=True)
    assert "You can start your next export at" in _flash(response)
    assert len(_exports()) == 1


def test_the_profiles_export_button_starts_a_json_export_in_the_centre(app, client, susan):
    login(client)
    token = csrf_token(client, "/user/susan")
    response = client.post("/export_posts", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith("/user/susan")
    (export,) = _exports()
    assert export.format == "json" and export.status == TaskStatus.QUEUED
    response = client.post("/export_posts", data={"csrf_token": token}, follow_redirects=True)
    assert "An export task is currently in progress" in _flash(response)
    assert len(_exports()) == 1
    # And the way to the export centre, from the profile and from the navigation.
    html = client.get("/user/susan").get_data(as_text=True)
    assert html.count('href="/exports"') == 2


def test_actions_answer_json_when_asked(app, client, susan):
    login(client)
    headers = {"Accept": "application/json"}
    response = _start(client, "csv", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["export"]["format"] == "csv" and body["export"]["status"] == "queued"
    refused = _start(client, "json", headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["message"] == "An export task is currently in progress"
    listing = client.get("/exports", headers=headers).get_json()
    assert [e["id"] for e in listing] == [body["export"]["id"]]


# --------------------------------------------------------------------------- actions

def test_cancel_then_retry_and_the_history_newest_first(app, client, susan):
    login(client)
    _start(client, "json")
    (export,) = _exports()
    response = _post(client, f"/exports/{export.id}/cancel", follow_redirects=True)
    assert "The export was cancelled." in _flash(response)
    assert _exports()[0].status == TaskStatus.CANCELLED
    row = _row(response.get_data(as_text=True), export)
    assert "Cancelled" in row and "Cancelled by you." in row and "Retry" in row

    response = _post(client, f"/exports/{export.id}/cancel", follow_redirects=True)
    assert "This export has already ended; there is nothing to cancel." in _flash(response)

    response = _post(client, f"/exports/{export.id}/retry", follow_redirects=True)
    assert "The export is being tried again." in _flash(response)
    (export,) = _exports()
    assert export.status == TaskStatus.QUEUED
    assert [job.id for job in bulk_queue(app).jobs] == [export.task_id]

    response = _post(client, f"/exports/{export.id}/retry", follow_redirects=True)
    assert "Only a failed or cancelled export can be tried again." in _flash(response)

    _post(client, f"/exports/{export.id}/cancel")
    _start(client, "csv")
    html = client.get("/exports").get_data(as_text=True)
    older, newer = _exports()
    assert html.index(f'id="export-{newer.id}"') < html.index(f'id="export-{older.id}"')


def test_delete_asks_first_then_removes_the_export_and_its_file(app, client, susan):
    login(client)
    export = finished_export(client)
    key = export.storage_key
    page = client.get(f"/exports/{export.id}/delete")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Delete this export?" in html and "posts.json" in html
    assert f'action="/exports/{export.id}/delete"' in html
    assert _exports() == [export]  # asking deleted nothing

    response = _post(client, f"/exports/{export.id}/delete", follow_redirects=True)
    assert "The export was deleted." in _flash(response)
    assert _exports() == []
    assert not get_storage().exists(key)
    assert client.get(f"/exports/{export.id}/download").status_code == 404


# --------------------------------------------------------------------------- download

def test_a_finished_export_downloads_as_a_file(app, client, susan):
    login(client)
    export = finished_export(client)
    html = client.get("/exports").get_data(as_text=True)
    row = _row(html, export)
    assert "Ready" in row and f'href="/exports/{export.id}/download"' in row
    assert re.search(rf'<td [^>]*data-label="Posts">{len(POSTS)}</td>', row)
    assert f"{export.size} B" in row  # a few hundred bytes

    response = client.get(f"/exports/{export.id}/download")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "posts.json" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data())
    assert [p["body"] for p in data["posts"]] == POSTS


def test_an_expired_export_says_so_instead_of_downloading(app, client, susan):
    login(client)
    export = finished_export(client)
    # Past its expiry, before the scheduled job has removed it ...
    export.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    response = client.get(f"/exports/{export.id}/download", follow_redirects=True)
    assert "This export has expired" in _flash(response)
    # ... and after.
    assert centre.expire_due() == 1
    response = client.get(f"/exports/{export.id}/download", follow_redirects=True)
    assert response.request.path == "/exports"
    assert "This export has expired" in _flash(response)
    row = _row(response.get_data(as_text=True), export)
    assert "Expired" in row and "Download" not in row


def test_an_unfinished_export_is_not_downloadable_yet(app, client, susan):
    login(client)
    _start(client, "json")
    (export,) = _exports()
    response = client.get(f"/exports/{export.id}/download", follow_redirects=True)
    assert "This export is not ready yet." in _flash(response)


# --------------------------------------------------------------------------- escaping

def test_the_history_shows_an_error_message_as_text(app, client, susan):
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    login(client)
    _start(client, "json")
    (export,) = _exports()
    db.session.execute(sa.update(Task).where(Task.id == export.task_id).values(
        status=TaskStatus.FAILED, complete=True, active_name=None, error=payload))
    db.session.commit()
    html = client.get("/exports").get_data(as_text=True)
    row = _row(html, export)
    assert "Failed" in row and str(escape(payload)) in row
    assert "<img" not in row and "<script" not in row


@pytest.mark.parametrize("config_overrides",
                         [{"RATELIMIT_ENABLED": True, "RATELIMIT_EXPORT": "1 per minute"}])
def test_starting_exports_is_rate_limited(app, client, susan, config_overrides):
    login(client)
    _start(client, "json")
    assert _start(client, "csv").status_code == 429
    assert len(_exports()) == 1



def test_every_status_is_shown_with_its_actions_and_no_inline_code(app, client, susan):
    """A history with one export in each state, as the page shows it: what each row says and
    offers, and nothing the Content-Security-Policy forbids (test_security_headers' check)."""
    from tests.test_security_headers import assert_no_inline_code

    def export(status: str, label: str = "", **fields) -> Export:
        task = Task(id=f"task-{label or status}", name="export_posts",
                    description="Exporting posts...", user_id=susan.id, status=status, progress=40,
                    complete=status not in (TaskStatus.QUEUED, TaskStatus.RUNNING),
                    active_name="export_posts" if status == TaskStatus.RUNNING else None,
                    error="Disk full." if status == TaskStatus.FAILED else None)
        row = Export(user_id=susan.id, format="csv", filename="posts.csv", task=task, **fields)
        db.session.add_all([task, row])
        db.session.commit()
        return row

    later = utcnow() + timedelta(days=7)
    rows = {
        "running": export(TaskStatus.RUNNING),
        "finished": export(TaskStatus.FINISHED, storage_key="k", size=2048, posts_count=3,
                           finished_at=utcnow(), expires_at=later),
        "failed": export(TaskStatus.FAILED),
        "cancelled": export(TaskStatus.CANCELLED),
        "expired": export(TaskStatus.FINISHED, "expired", expired_at=utcnow(), posts_count=3),
    }
    login(client)
    html = client.get("/exports").get_data(as_text=True)
    assert_no_inline_code("/exports", html)
    # The actions, by the URLs their buttons and links go to.
    cancel, retry, download = '/cancel"', '/retry"', '/download"'
    expected = {"running": ["In progress", 'aria-valuenow="40"', cancel],
                "finished": ["Ready", download, "2.0 KiB", "<time"],
                "failed": ["Failed", "Disk full.", retry],
                "cancelled": ["Cancelled", retry],
                "expired": ["Expired"]}
    absent = {"running": [download, retry], "finished": [cancel, retry],
              "failed": [download, cancel], "cancelled": [download, cancel],
              "expired": [download, cancel, retry]}
    for status, row in rows.items():
        text = _row(html, row)
        assert all(word in text for word in expected[status]), (status, text)
        assert not any(word in text for word in absent[status]), (status, text)
        assert '/delete"' in text
    assert "An export is in progress" in html
    assert_no_inline_code("delete page", client.get(
        f"/exports/{rows['running'].id}/delete").get_data(as_text=True))
