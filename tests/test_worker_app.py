"""A worker process's app serves no request and runs no command: plain `rq worker` builds it
in every job's work horse, so it leaves out the web (docs/performance.md §1). What it needs
for a job (the database, Redis, mail, translations, templates) it still has: the task tests
(tests/test_tasks.py, tests/test_exports.py) run jobs through it, mail content included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.once

# Imported by the web only: views, the rate limiter, the migrations, the scrape side of the
# metrics. (WTForms stays: the module-level CSRFProtect of app/__init__.py imports it.)
WEB_ONLY = ("flask_limiter", "flask_migrate", "alembic", "prometheus_client",
            "app.main.routes", "app.auth.routes", "app.exports.routes", "app.admin",
            "app.live", "app.outbox", "app.monitoring", "app.errors")


def _in_a_fresh_work_horse(code: str) -> dict:
    """Run `code` after what a plain `rq worker`'s work horse does first: import app.tasks."""
    script = f"import json, sys, rq\nimport app.tasks\n{code}"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=worker_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_work_horse_imports_nothing_only_the_web_needs():
    loaded = _in_a_fresh_work_horse("print(json.dumps(sorted(sys.modules)))")
    found = [m for m in loaded if any(m == w or m.startswith(w + ".") for w in WEB_ONLY)]
    assert found == []


def test_the_worker_app_has_no_routes_but_renders_the_export_mail():
    seen = _in_a_fresh_work_horse(
        "from flask import render_template\n"
        "from app.worker_app import get_worker_app\n"
        "app = get_worker_app()\n"
        "body = render_template('email/export_posts.txt', user={'username': 'susan'},\n"
        "    export={'format': 'csv', 'filename': 'posts.csv'}, attached=False, size=2048,\n"
        "    limit=1024, expires='2026-01-01 00:00', download_url='https://x/d',\n"
        "    exports_url='https://x/exports')\n"
        "print(json.dumps({'rules': [r.endpoint for r in app.url_map.iter_rules()],\n"
        "                  'body': body}))")
    assert seen["rules"] == ["static"]
    assert "Dear susan," in seen["body"]
    assert "https://x/d" in seen["body"]


@pytest.mark.parametrize("username", ["susan", "a.b-c_d", "ünï cödé", "x@y!(z)"])
def test_the_actor_url_a_worker_writes_is_the_webs_profile_url(app, username):
    from types import SimpleNamespace

    from app.exports.activitystreams import actor_url

    with app.test_request_context():
        from flask import url_for

        web = app.config["PUBLIC_BASE_URL"] + url_for("main.user", username=username)
        assert actor_url(SimpleNamespace(username=username)) == web
