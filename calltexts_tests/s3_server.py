"""A real S3 protocol endpoint on loopback (moto's server mode), for tests and benchmarks.

Use the fixtures (`s3_server`, `s3_bucket`) by declaring
`pytest_plugins = ("calltexts_tests.s3_server",)` in a test module (import `S3Server` for type
hints only under `if TYPE_CHECKING:`, or pytest warns that it cannot rewrite the module), or call
`running_s3_server()` directly in a benchmark script. While the `s3_server` fixture is active the
AWS environment is dummy and points at the loopback server (AWS_ENDPOINT_URL), so even a client
built without an explicit endpoint cannot reach the real AWS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
DUMMY_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str = REGION

    def client(self, service: str = "s3") -> Any:
        """A boto3 client of `service` (s3, kms, ...) bound to this server with dummy keys."""
        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.region, **DUMMY_CREDENTIALS
        )

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"calltexts-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def delete_bucket(self, bucket: str) -> None:
        client = self.client()
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's S3 (and KMS, ...) server on a free loopback port; stop it on exit."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


def offline_aws_env(monkeypatch: pytest.MonkeyPatch, endpoint_url: str) -> None:
    """Dummy credentials, no profiles, no instance metadata, every endpoint on loopback."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_SESSION_TOKEN": DUMMY_CREDENTIALS["aws_session_token"],
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/calltexts-aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/calltexts-aws-credentials",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def s3_server_process() -> Iterator[S3Server]:
    # One server per session: starting moto's app costs far more than a bucket per test.
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_server(s3_server_process: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    offline_aws_env(monkeypatch, s3_server_process.endpoint_url)
    return s3_server_process


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket of its own for one test; removed afterwards."""
    bucket = s3_server.create_bucket()
    yield bucket
    s3_server.delete_bucket(bucket)
