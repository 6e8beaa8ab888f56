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
# metrics, Flask-WTF and Flask-Bootstrap (app.csrf and app.bootstrap are made on first use).
WEB_ONLY = ("flask_limiter", "flask_migrate", "alembic", "prometheus_client", "flask_wtf",
            "wtforms", "flask_bootstrap",
            "app.main.routes", "app.auth.routes", "app.exports.routes", "app.imports.routes",
            "app.imports.forms", "app.admin",
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


def test_the_garbage_collector_is_off_only_while_the_app_is_imported():
    """Off while app/__init__.py imports (the work horse's cost: app/jobs/process.py), on
    again after, for the web as for the jobs; a worker's objects frozen out of its passes."""
    state = "print(json.dumps([gc.isenabled(), gc.get_freeze_count() > 0]))"
    assert _in_a_fresh_work_horse(f"import gc\n{state}") == [True, True]
    web = subprocess.run(
        [sys.executable, "-c", f"import gc, json\nimport microblog\n{state}"], cwd=ROOT,
        env=worker_env(), capture_output=True, text=True, timeout=120)
    assert web.returncode == 0, web.stderr
    assert json.loads(web.stdout.strip().splitlines()[-1]) == [True, False]


def test_the_web_makes_its_own_extensions_on_first_use(app):
    from flask_bootstrap import Bootstrap5
    from flask_wtf.csrf import CSRFProtect

    import app as package

    assert isinstance(package.csrf, CSRFProtect) and package.csrf is package.csrf
    assert isinstance(package.bootstrap, Bootstrap5)
    assert "csrf" in app.extensions and "bootstrap" in app.extensions
    with pytest.raises(AttributeError):
        package.no_such_extension  # noqa: B018


def test_the_worker_app_has_no_routes_but_renders_the_export_mail():
    seen = _in_a_fresh_work_horse(
        "from flask import render_template\n"
        "from app.jobs.bootstrap import get_worker_app\n"
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


@pytest.mark.parametrize("old, new, names", [
    ("app.worker", "-w app.jobs.worker.AppWorker", ["AppWorker"]),
    ("app.cron", "rq cron app.jobs.cron", ["QUEUE", "EXPIRE_EVERY"]),
])
def test_a_deployment_that_names_an_old_module_path_still_starts_and_is_told_the_new_one(
        old, new, names):
    """A unit written before app/jobs/ existed (`rq worker -w app.worker.AppWorker`, `rq cron
    app.cron`) keeps working, and its log says what to write instead."""
    script = (f"import importlib, json\nm = importlib.import_module({old!r})\n"
              f"print(json.dumps({{n: repr(getattr(m, n)) for n in {names!r}}}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=worker_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(found) == set(names)
    assert "FutureWarning" in result.stderr and new in result.stderr
