"""The README's Python session of the token API, run as it is written (only the site's address
and the password changed) against a real gunicorn and a real `rq worker`: a token from
POST /api/tokens, an export started with an Idempotency-Key, polled with its ETag until it
ended, downloaded; the file holds the user's posts."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, make_user
from tests.endpoints import PASSWORD
from tests.test_browser import Worker
from tests.web_server import gunicorn

# The README and the export over HTTP, whatever the database (the API's own tests run in the
# matrix): CI runs it once (SQLite).
pytestmark = pytest.mark.once

POSTS = ["the first post", "a second, with a comma", "and a third"]


def readme_session() -> str:
    section = (ROOT / "README.md").read_text().split("## The token API", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return code


def test_the_readmes_python_session_exports_and_downloads_the_posts(app, tmp_path):
    make_user("susan", password=PASSWORD, posts=POSTS)
    code = readme_session()
    assert '"http://127.0.0.1:5000"' in code and '"PASSWORD"' in code
    worker = Worker(app)
    with gunicorn() as server:
        worker.wait_ready()
        program = code.replace('"http://127.0.0.1:5000"', repr(server.base)).replace(
            '"PASSWORD"', repr(PASSWORD))
        run = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    worker.stop()
    assert run.returncode == 0, run.stderr + worker.output()
    [downloaded] = list(tmp_path.glob("*.csv"))
    rows = list(csv.DictReader(downloaded.read_text(encoding="utf-8-sig").splitlines()))
    assert sorted(row["body"] for row in rows) == sorted(POSTS)
