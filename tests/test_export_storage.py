"""Export storage and the download: the local folder and the S3-compatible store (a real moto
server in its own process, tests/s3.py) behave the same; downloads stream with ranges, in flat
memory, or redirect to a presigned URL that really downloads; an export run by a real worker
with EXPORT_STORAGE=s3 lands in the bucket and leaves nothing on the worker's disk."""

from __future__ import annotations

import hashlib
import json
import os
import time
import tracemalloc
import urllib.request
from pathlib import Path

import pytest
import yaml
from werkzeug.http import parse_options_header

from app.exports.download import download_response
from app.exports.storage import (
    CHUNK_SIZE,
    LocalStorage,
    S3Storage,
    build_storage,
    cleanup_stale_temp_files,
    get_storage,
)
from tests.conftest import ROOT, make_user, run_worker_burst, worker_env

# Files in a folder or an S3-compatible bucket and the download of them; the
# database only records the export: CI runs it once (SQLite).
pytestmark = pytest.mark.once

pytest_plugins = ("tests.s3",)  # the moto_server and s3 fixtures

KEY = "7/abcdef/posts.json"
DATA = os.urandom(3 * CHUNK_SIZE + 1234)  # several chunks, and a partial last one


@pytest.fixture(params=["local", "s3"])
def storage(request, config_overrides, tmp_path):
    """The app's export storage, once a folder, once a bucket on the moto server."""
    if request.param == "s3":
        request.getfixturevalue("s3")
    else:
        config_overrides.update(EXPORT_STORAGE="local",
                                EXPORT_FOLDER=str(tmp_path / "export-folder"))
    request.getfixturevalue("app")
    return get_storage()


def files_under(folder) -> list[str]:
    root = Path(folder)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def write(storage, key: str = KEY, data: bytes = DATA) -> None:
    with storage.writer(key) as out:
        out.write(data)


def read_all(storage, key: str = KEY, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.read(key, start, end))


# --------------------------------------------------------------------------- storage

def test_written_file_reads_back_whole_and_by_range(storage):
    write(storage)
    assert storage.exists(KEY)
    assert storage.size(KEY) == len(DATA)
    assert read_all(storage) == DATA
    size = len(DATA)
    for start, end in [(0, 10), (100, 100 + 2 * CHUNK_SIZE + 5), (size - 7, None),
                       (CHUNK_SIZE, size), (5, 5), (size, None)]:
        assert read_all(storage, start=start, end=end) == DATA[start:end], (start, end)
    assert all(len(chunk) <= CHUNK_SIZE for chunk in storage.read(KEY))


def test_rewriting_a_key_replaces_its_file(storage):
    write(storage, data=b"first attempt, longer than the second")
    write(storage, data=b"second")
    assert read_all(storage) == b"second"
    assert storage.size(KEY) == 6


def test_failed_writer_publishes_nothing_and_leaves_no_temporary_file(storage, app):
    with pytest.raises(RuntimeError, match="export crashed"):
        with storage.writer(KEY) as out:
            out.write(DATA)
            out.seek(0)  # seekable, as the zip writer needs
            out.write(b"rewritten")
            raise RuntimeError("export crashed")
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.size(KEY)
    assert files_under(app.config["EXPORT_FOLDER"]) == []


def test_successful_writer_leaves_only_the_published_file(storage, app):
    write(storage)
    expected = [KEY] if isinstance(storage, LocalStorage) else []
    assert files_under(app.config["EXPORT_FOLDER"]) == expected


def test_delete_removes_the_file_and_does_not_mind_a_missing_one(storage):
    write(storage)
    storage.delete(KEY)
    assert not storage.exists(KEY)
    if isinstance(storage, LocalStorage):
        assert not storage.path(KEY).parent.exists()  # no empty folder per export piles up
    storage.delete(KEY)
    storage.delete("7/never/posts.json")


def test_missing_file_is_file_not_found(storage):
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.size(KEY)
    with pytest.raises(FileNotFoundError):
        read_all(storage)


def test_s3_objects_live_under_the_prefix_with_a_content_type(s3, app):
    write(get_storage())
    assert s3.keys() == ["exports/" + KEY]
    head = s3.client.head_object(Bucket=s3.bucket, Key="exports/" + KEY)
    assert head["ContentType"] == "application/json"
    assert s3.get(KEY) == DATA


def test_s3_storage_is_built_from_the_settings(s3, app):
    storage = get_storage()
    assert isinstance(storage, S3Storage)
    assert get_storage() is storage  # once per app
    assert (storage.bucket, storage.prefix, storage.endpoint_url) == (
        s3.bucket, "exports/", s3.endpoint_url)
    assert storage.presigned_url(KEY, "posts.json", "application/json") is None
    app.config["EXPORT_S3_BUCKET"] = None
    with pytest.raises(RuntimeError, match="EXPORT_S3_BUCKET"):
        build_storage(app)


def test_stale_temporary_files_are_cleaned_up_and_fresh_ones_kept(tmp_path):
    folder = tmp_path / "exports"
    (folder / "3" / "abc").mkdir(parents=True)
    killed = folder / "3" / "abc" / "posts.json.x1y2.part"  # LocalStorage's, killed worker
    upload = folder / "upload.k3j4.part"  # S3Storage's, killed before its upload
    running = folder / "upload.now1.part"  # a worker writing right now
    published = folder / "3" / "abc" / "archive.zip"
    for path in (killed, upload, running, published):
        path.write_bytes(b"x")
    hour_ago = time.time() - 3600
    for path in (killed, upload, published):
        os.utime(path, (hour_ago, hour_ago))

    assert cleanup_stale_temp_files(max_age=600, folder=folder) == 2
    assert files_under(folder) == ["3/abc/archive.zip", "upload.now1.part"]
    assert cleanup_stale_temp_files(max_age=600, folder=tmp_path / "none") == 0


# --------------------------------------------------------------------------- download

@pytest.fixture
def download(app):
    """A test client with a test-only route serving KEY with download_response, as the
    pages' GET /exports/<id>/download does; the filename comes from the URL."""
    def serve(filename):
        return download_response(get_storage(), KEY, filename, "application/json",
                                 etag="export-abcdef-1")

    app.add_url_rule("/test-download/<filename>", "test_download", serve)
    return app.test_client()


def test_download_sends_the_whole_file_as_an_attachment(storage, download):
    write(storage)
    response = download.get("/test-download/posts.json")
    assert response.status_code == 200
    assert response.data == DATA
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Disposition"] == "attachment; filename=posts.json"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize("header, start, end", [
    ("bytes=10-19", 10, 20),
    ("bytes=-5", len(DATA) - 5, len(DATA)),  # the last 5 bytes
    (f"bytes={CHUNK_SIZE - 3}-", CHUNK_SIZE - 3, len(DATA)),  # resume from an offset
    (f"bytes=0-{len(DATA) + 100}", 0, len(DATA)),  # past the end: up to the end
])
def test_download_answers_a_range_with_206_and_just_those_bytes(storage, download, header,
                                                                start, end):
    write(storage)
    response = download.get("/test-download/posts.json", headers={"Range": header})
    assert response.status_code == 206
    assert response.data == DATA[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start)


def test_download_range_past_the_end_is_416_with_the_size(storage, download):
    write(storage)
    response = download.get("/test-download/posts.json",
                            headers={"Range": f"bytes={len(DATA)}-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert response.data == b""


@pytest.mark.parametrize("headers", [
    {"Range": "bytes=0-1,5-6"},  # several ranges: not supported, the whole file
    {"Range": "bytes=0-9", "If-Range": '"an-older-version"'},  # the file changed
    {"Range": "bytes=0-9", "If-Range": "Wed, 21 Oct 2026 07:28:00 GMT"},  # no dates here
    {"Range": "lines=0-9"},
])
def test_download_ignores_ranges_it_cannot_honour_and_sends_everything(storage, download,
                                                                       headers):
    write(storage)
    response = download.get("/test-download/posts.json", headers=headers)
    assert response.status_code == 200
    assert response.data == DATA
    assert "Content-Range" not in response.headers


def test_download_resumes_with_an_if_range_naming_its_etag(storage, download):
    write(storage)
    first = download.get("/test-download/posts.json")
    response = download.get("/test-download/posts.json", headers={
        "Range": "bytes=100-", "If-Range": first.headers["ETag"]})
    assert response.status_code == 206
    assert response.data == DATA[100:]


def test_download_head_has_the_headers_and_no_body(storage, download):
    write(storage)
    response = download.head("/test-download/posts.json")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.data == b""


def test_download_of_a_missing_file_is_a_404_page(storage, download):
    response = download.get("/test-download/posts.json")
    assert response.status_code == 404


def test_download_of_a_file_removed_after_its_size_was_read_is_a_404(app, tmp_path):
    class Expiring(LocalStorage):  # expiry removes the file between size() and read()
        def size(self, key):
            size = super().size(key)
            self.delete(key)
            return size

    storage = Expiring(tmp_path)
    write(storage)
    app.add_url_rule("/test-expiring", "test_expiring", lambda: download_response(
        storage, KEY, "posts.json", "application/json"))
    assert app.test_client().get("/test-expiring").status_code == 404


def test_download_filename_header_carries_a_non_ascii_name(storage, download):
    write(storage)
    name = "내 글 “2026” — posts.json"
    response = download.get("/test-download/" + urllib.request.quote(name))
    value, params = parse_options_header(response.headers["Content-Disposition"])
    assert value == "attachment"
    assert params["filename"] == name  # werkzeug reads filename* (RFC 5987) first
    raw = response.headers["Content-Disposition"]
    assert raw.isascii()  # old clients read the ASCII fallback:
    assert raw.startswith('attachment; filename="  2026  posts.json"; filename*=UTF-8\'\'')


@pytest.fixture
def presigned(s3, config_overrides):
    """The bucket, with EXPORT_S3_PRESIGNED_DOWNLOADS on (set before the app is built)."""
    config_overrides.update(EXPORT_S3_PRESIGNED_DOWNLOADS=True, EXPORT_S3_PRESIGN_SECONDS=60)
    return s3


@pytest.mark.parametrize("filename", ["posts.json", "ëxport “final”.json"])
def test_presigned_download_redirects_to_a_url_that_serves_the_file(presigned, download,
                                                                    filename):
    bucket = presigned
    write(get_storage())

    response = download.get("/test-download/" + urllib.request.quote(filename))
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "private, no-store"
    location = response.headers["Location"]
    assert location.startswith(f"{bucket.endpoint_url}/{bucket.bucket}/exports/{KEY}?")

    with urllib.request.urlopen(location, timeout=30) as fetched:  # as a browser would
        assert fetched.status == 200
        assert fetched.read() == DATA
        assert fetched.headers["Content-Type"] == "application/json"
        _, params = parse_options_header(fetched.headers["Content-Disposition"])
        assert params["filename"] == filename


def test_large_download_streams_in_flat_memory(storage, download):
    size = 50 * 2**20
    digest = hashlib.sha256()
    with storage.writer(KEY) as out:
        block = os.urandom(2**20)
        for i in range(size // len(block)):
            piece = block[i:] + block[:i]
            digest.update(piece)
            out.write(piece)
    got = hashlib.sha256()
    received = 0
    tracemalloc.start()
    try:
        response = download.get("/test-download/posts.json", buffered=False)
        for chunk in response.response:
            got.update(chunk)
            received += len(chunk)
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert got.hexdigest() == digest.hexdigest()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MB traced while serving 50 MB"
    storage.delete(KEY)


# --------------------------------------------------------------------------- end to end

BODIES = ["<b>bold</b> & \"quoted\"", "line one\nline two", "emoji 🎉 and 한국어",
          "=1+2 a formula"]


def test_export_with_s3_storage_lands_in_the_bucket_from_a_real_worker(s3, app):
    from app import db
    from app.exports.actions import start_export
    from app.models import Export

    user = make_user("ana", posts=BODIES)
    export_id = start_export(user, "json").id

    result = run_worker_burst(env=worker_env())
    assert result.returncode == 0, result.stdout + result.stderr

    db.session.expire_all()
    export = db.session.get(Export, export_id)
    assert export.status == "finished", result.stdout + result.stderr
    assert s3.keys() == ["exports/" + export.storage_key]
    archive = json.loads(s3.get(export.storage_key))
    assert [post["body"] for post in archive["posts"]] == BODIES
    assert export.posts_count == len(BODIES)
    assert export.size == len(s3.get(export.storage_key))
    assert files_under(s3.temp_dir) == []  # the upload's temporary file is gone


# --------------------------------------------------------------------------- compose

def test_compose_runs_minio_with_a_bucket_and_points_web_and_workers_at_it():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    assert "healthcheck" in minio
    assert any(str(v).endswith(":/data") for v in minio["volumes"])
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mb --ignore-existing" in " ".join(init["entrypoint"] + init.get("command", []))
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["EXPORT_STORAGE"] == "s3"
        assert env["EXPORT_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["EXPORT_S3_BUCKET"]
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert (services[name]["depends_on"]["minio-init"]["condition"]
                == "service_completed_successfully")


# --------------------------------------------------------------------------- the store is down

def test_an_unreachable_object_store_is_said_plainly_and_loses_nothing(s3, app, monkeypatch):
    """The object store goes away after an export finished: the download says so (a message
    on /exports, 503 as JSON; not a 500 page), a delete is refused and keeps the export, the
    expiry job leaves it for its next run, and a new export fails as retryable with the
    reason, instead of "the task failed"."""
    from app import db
    from app.exports import centre
    from app.exports.actions import start_export
    from app.models import Export, Task, TaskStatus
    from tests.conftest import csrf_token, login, run_jobs_in_process

    app.config["EXPORT_COOLDOWN"] = 0
    user = make_user(posts=BODIES)
    export_id = start_export(user, "csv").id
    run_jobs_in_process(app)
    assert db.session.get(Export, export_id).status == "finished"

    # The store stops answering: a port nothing listens on, one attempt per request.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    app.config["EXPORT_S3_ENDPOINT_URL"] = "http://127.0.0.1:9"
    app.extensions.pop("microblog_export_storage", None)
    client = app.test_client()
    login(client)

    download = client.get(f"/exports/{export_id}/download", follow_redirects=True)
    assert download.status_code == 200  # back on /exports, which says what happened
    assert "cannot be reached right now" in download.get_data(as_text=True)
    asked = client.get(f"/exports/{export_id}/download", headers={"Accept": "application/json"})
    assert asked.status_code == 503 and "cannot be reached" in asked.get_json()["message"]

    deleted = client.post(f"/exports/{export_id}/delete", data={
        "csrf_token": csrf_token(client, "/exports")}, follow_redirects=True)
    assert "cannot be reached right now" in deleted.get_data(as_text=True)
    db.session.expire_all()
    export = db.session.get(Export, export_id)
    assert export is not None and export.storage_key is not None

    assert centre.expire_due(now=export.expires_at) == 0
    db.session.expire_all()
    assert db.session.get(Export, export_id).status == "finished"

    again = start_export(user, "json")
    run_jobs_in_process(app)
    task = db.session.get(Task, again.task_id)
    db.session.refresh(task)
    assert task.status == TaskStatus.QUEUED  # a transient failure: retried later
    assert task.error.startswith("The export storage could not be reached.")
    assert files_under(s3.temp_dir) == []  # the upload's temporary file is gone

    # The store is back: the export that waited is still there, whole.
    app.config["EXPORT_S3_ENDPOINT_URL"] = s3.endpoint_url
    app.extensions.pop("microblog_export_storage", None)
    body = client.get(f"/exports/{export_id}/download").get_data(as_text=True)
    assert all(line in body for line in ("emoji 🎉 and 한국어",))
