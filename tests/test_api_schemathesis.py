"""Schemathesis against the running server: a real gunicorn (gunicorn.conf.py, as the Procfile
runs it) serves the app and a real worker runs its jobs; `schemathesis run` reads
/api/openapi.json from the server and calls every operation with examples, boundary values
and random data (valid and not), as a user with posts, a finished export and a finished
import; then, as a second user, follows the document's OpenAPI links (start -> get -> cancel,
download, retry, delete; upload -> get -> confirm, cancel, report) as a program would.

What must hold: no server error (5xx) and no answer that breaks the document (status codes,
content types, headers and bodies as declared), for every operation. The rate limits are off
(a 429 would cut the run short; they are tested in test_rate_limits.py and the API's tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.models import ApiToken
from tests.api_helpers import token_for
from tests.conftest import make_user
from tests.endpoints import finished_export, finished_import
from tests.test_browser import Worker
from tests.web_server import gunicorn

# The document and the server, whatever the database: CI runs it once (SQLite).
pytestmark = pytest.mark.once

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Not `ensure_resource_availability`: a POST whose Idempotency-Key was used before answers
# the first answer again, whatever happened since (docs/api.md), so the export it names may
# have been deleted by an earlier step; a 404 for it is the rule.
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "use_after_free",
    "ignored_auth", "unsupported_method",
])
# Enough to reach every operation and its boundaries a few times over, in a couple of minutes
# on a busy 2-core machine; the seed makes a failure repeatable.
MAX_EXAMPLES = 15
SEED = 21
# The stateful phase's chains: each a few calls long, most starting with a 202.
STATEFUL_EXAMPLES = 100


def _user_with_a_finished_export_and_import(username: str) -> str:
    """A user with posts, a finished export and a finished import; their token."""
    from app import db
    from app.models import Task, TaskStatus

    user = make_user(username, posts=["first post", "second post"])
    task = Task(id=f"schemathesis-export-of-{username}", name="export_posts",
                description="Exporting posts...", user=user, complete=True,
                status=TaskStatus.FINISHED, progress=100)
    db.session.add(task)
    db.session.commit()
    finished_export(user, task, f"schemathesis-{username}")
    finished_import(user, f"schemathesis-{username}")
    return token_for(user)


def schemathesis(base: str, token: str, phases: str, report: Path,
                 examples: int = MAX_EXAMPLES) -> tuple[dict, str]:
    """`schemathesis run` against the server as the token's user: its JSON report and its
    output (the token is masked in both)."""
    run = subprocess.run(
        [SCHEMATHESIS, "run", f"{base}/api/openapi.json", "--phases", phases,
         "--checks", CHECKS, "--header", f"Authorization: Bearer {token}",
         "--max-examples", str(examples), "--seed", str(SEED), "--workers", "1",
         "--request-timeout", "60", "--report", "json,ndjson", "--report-json-path", str(report),
         "--report-ndjson-path", str(report.with_suffix(".ndjson")),
         # DELETE /api/tokens revokes the token the run acts with: every later request
         # would be a 401 (test_api.py tests it).
         "--exclude-operation-id", "tokens.revoke_token",
         "--suppress-health-check", "all", "--warnings", "off"],
        # Its cache of failures goes beside the report, not into the repository.
        cwd=report.parent, capture_output=True, text=True, timeout=1800)
    output = run.stdout + run.stderr
    assert token not in output  # Schemathesis masks the Authorization header
    assert run.returncode == 0, output[-20000:]
    return json.loads(report.read_text()), output


# Minutes on a busy machine (a few thousand requests, each through the app): more than the
# suite's default five.
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_broken_answer(app, tmp_path):
    # Two users: the first one's exports and imports stay queued (no worker runs here), so
    # the stateful run, whose chains start with a 202, starts from a user with none active.
    fuzzed = _user_with_a_finished_export_and_import("fuzzed")
    chained = token_for(make_user("chained", posts=["a post to export"]))
    # A worker, so that exports finish (and the next may start) and previews are read.
    worker = Worker(app, EXPORT_COOLDOWN=0)
    # An event stream ends after a second (EVENTS_MAX_AGE), not ten minutes: Schemathesis
    # reads each answer to its end.
    try:
        with gunicorn(RATELIMIT_ENABLED="false", EXPORT_COOLDOWN=0, EVENTS_MAX_AGE=1) as server:
            worker.wait_ready()
            document = requests.get(f"{server.base}/api/openapi.json", timeout=60).json()
            # The two runs at once: each mostly waits for the server's answers.
            with ThreadPoolExecutor(2) as runs:
                fuzzing_run = runs.submit(schemathesis, server.base, fuzzed,
                                          "examples,coverage,fuzzing", tmp_path / "fuzzing.json")
                stateful_run = runs.submit(schemathesis, server.base, chained, "stateful",
                                           tmp_path / "stateful.json", STATEFUL_EXAMPLES)
                fuzzing, _ = fuzzing_run.result()
                stateful, output = stateful_run.result()
    finally:  # a worker left running would take the jobs of this process's later tests
        worker.stop()
    operations = sum(1 for item in document["paths"].values()
                     for method in item if method in ("get", "post", "put", "patch", "delete"))
    assert fuzzing["operations"]["tested"] == operations - 1, fuzzing["operations"]
    # The runs acted as their users to the end (a revoked token would have made them 401s).
    for token in (fuzzed, chained):
        assert ApiToken.find(token) is not None
    for report in (fuzzing, stateful):
        assert report["failures"] == [] and report["errors"] == []
    assert fuzzing["phases"]["coverage"]["status"] == "success", fuzzing["phases"]
    assert fuzzing["phases"]["fuzzing"]["status"] == "success", fuzzing["phases"]
    assert stateful["phases"]["stateful"]["status"] == "success", stateful["phases"]
    # Which links a run follows depends on what the server answered (a 202, or a 409 while
    # the user's last export still runs): 7 to 18 of the 41 in the runs so far. Shown, not
    # held to a number (pytest -s).
    print(output[-2500:])
