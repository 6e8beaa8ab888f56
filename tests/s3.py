"""A real S3-compatible server for the object-store tests: moto's standalone server
(`python -m moto.server`, from `moto[server]`) in a process of its own on 127.0.0.1, once per
test run, and a fresh bucket per test. A test module uses them with

    pytest_plugins = ("tests.s3",)

`s3` points the test app (config_overrides) and worker processes (the environment) at the
bucket with EXPORT_STORAGE=s3, and gives EXPORT_FOLDER (the temporary files) a folder of
the test's own.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto-test-key", "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def moto_server():
    """The endpoint URL of a moto S3 server running in its own process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        _wait_listening(proc, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, grace=5)


@dataclass
class S3Bucket:
    endpoint_url: str
    bucket: str
    prefix: str
    temp_dir: Path
    client: object  # a boto3 S3 client, to look at the bucket as an operator would

    def keys(self) -> list[str]:
        """Every key in the bucket, with its prefix."""
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()


_clients: dict[str, object] = {}


def _operator_client(endpoint_url: str):
    """One boto3 client per server for the whole run (making one takes about a second)."""
    if endpoint_url not in _clients:
        import boto3

        _clients[endpoint_url] = boto3.session.Session(**{
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }).client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    return _clients[endpoint_url]


@pytest.fixture
def s3(moto_server, config_overrides, monkeypatch, tmp_path):
    """A fresh bucket on the moto server, with the app and workers configured to use it."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # No profile or credentials file of the machine's may take part.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    bucket = "exports-" + secrets.token_hex(6)
    temp_dir = tmp_path / "export-folder"
    settings = {"EXPORT_STORAGE": "s3", "EXPORT_S3_BUCKET": bucket,
                "EXPORT_S3_ENDPOINT_URL": moto_server, "EXPORT_S3_REGION": "us-east-1",
                "EXPORT_S3_PREFIX": "exports/", "EXPORT_FOLDER": str(temp_dir)}
    config_overrides.update(settings)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    client = _operator_client(moto_server)
    client.create_bucket(Bucket=bucket)
    store = S3Bucket(moto_server, bucket, "exports/", temp_dir, client)
    yield store
    for key in store.keys():
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
