"""S3Storage against a real S3 protocol endpoint on loopback (moto server)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pytest
from boto3.s3.transfer import TransferConfig
from dagster_aws.s3 import S3Resource

from calltexts_assets.clients.s3 import S3Storage
from calltexts_assets.files.storage_keys import UnsafeKeyError
from calltexts_assets.resources.s3_storage import S3StorageResource
from calltexts_assets.resources.storage import StorageResource

if TYPE_CHECKING:  # imported for real by pytest_plugins; importing it here too defeats that
    from calltexts_tests.s3_server import S3Server


KEY = "exports/2026-11/raw/2026/11/03/call_c1.mp3"
MB = 1024 * 1024


def _storage(server: S3Server, bucket: str, **kwargs: Any) -> S3Storage:
    return S3Storage(server.client(), bucket, **kwargs)


def _failing_chunks(good: int, size: int = 1000) -> Iterator[bytes]:
    for _ in range(good):
        yield b"x" * size
    raise ConnectionError("download broke mid-stream")


def test_aes256_round_trip(s3_server: S3Server, s3_bucket: str) -> None:
    storage = _storage(s3_server, s3_bucket, prefix="calltexts")
    data = os.urandom(300_000)
    stored = storage.write_stream(KEY, iter([data[:100_000], data[100_000:]]))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"calltexts/{KEY}")
    assert head["ServerSideEncryption"] == "AES256"
    assert "SSEKMSKeyId" not in head
    assert head["Metadata"]["sha256"] == stored.sha256
    assert head["ContentType"] == "audio/mpeg"

    assert storage.read_bytes(KEY) == data
    assert storage.sha256(KEY) == stored.sha256
    assert storage.stat(KEY) == len(data)
    assert storage.exists(KEY)
    assert storage.uri(KEY) == f"s3://{s3_bucket}/calltexts/{KEY}"


def test_kms_key_reaches_the_server(s3_server: S3Server, s3_bucket: str) -> None:
    key_id = s3_server.client("kms").create_key(Description="calltexts test")["KeyMetadata"]["Arn"]
    storage = _storage(s3_server, s3_bucket, sse="aws:kms", kms_key_id=key_id)
    storage.write_text("exports/2026-11/transcripts/call_c1.txt", "Клиент: Добрый день")
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key="exports/2026-11/transcripts/call_c1.txt"
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert storage.read_bytes("exports/2026-11/transcripts/call_c1.txt").decode() == (
        "Клиент: Добрый день"
    )


def test_multipart_upload_is_encrypted(s3_server: S3Server, s3_bucket: str) -> None:
    config = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB)
    storage = _storage(s3_server, s3_bucket, transfer_config=config)
    stored = storage.write_stream(KEY, (b"\x02" * MB for _ in range(11)))
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=KEY)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentLength"] == stored.size == 11 * MB
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it really went multipart
    assert storage.sha256(KEY) == stored.sha256


def test_failed_stream_leaves_no_object(s3_server: S3Server, s3_bucket: str) -> None:
    storage = _storage(s3_server, s3_bucket)
    with pytest.raises(ConnectionError):
        storage.write_stream(KEY, _failing_chunks(good=5))
    assert not storage.exists(KEY)
    assert storage.list() == []
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_failed_multipart_upload_is_aborted(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    parts_seen = []

    def break_second_part(**_: Any) -> None:
        parts_seen.append(1)
        if len(parts_seen) == 2:
            raise ConnectionError("network gone during part 2")

    client.meta.events.register("before-call.s3.UploadPart", break_second_part)
    config = TransferConfig(
        multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=1
    )
    storage = S3Storage(client, s3_bucket, transfer_config=config)
    with pytest.raises(ConnectionError):
        storage.write_stream(KEY, (b"\x03" * MB for _ in range(11)))
    assert len(parts_seen) >= 2
    assert not storage.exists(KEY)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_list_stat_delete_and_local_path(s3_server: S3Server, s3_bucket: str) -> None:
    storage = _storage(s3_server, s3_bucket, prefix="tenant/calltexts")
    keys = [
        "exports/2026-11/transcripts/call_a.txt",
        "exports/2026-11/transcripts/call_b.txt",
        "exports/2026-12/transcripts/call_c.txt",
    ]
    for key in keys:
        storage.write_text(key, key)
    # an object outside the storage prefix is invisible to it
    s3_server.client().put_object(Bucket=s3_bucket, Key="tenant/other.txt", Body=b"x")

    assert [o.key for o in storage.list()] == keys
    assert [o.key for o in storage.list("exports/2026-11/")] == keys[:2]
    assert sorted(storage.keys("exports/")) == keys
    info = storage.list("exports/2026-12")[0]
    assert info.size == len(keys[2])
    assert info.modified_at.tzinfo is not None

    with storage.local_path(keys[0]) as path:
        assert path.suffix == ".txt"
        assert path.read_text() == keys[0]
    assert not path.exists()

    storage.delete(keys[0])
    storage.delete(keys[0])  # idempotent
    assert storage.stat(keys[0]) is None
    assert [o.key for o in storage.list()] == keys[1:]


def test_missing_objects(s3_server: S3Server, s3_bucket: str) -> None:
    storage = _storage(s3_server, s3_bucket)
    assert storage.stat(KEY) is None
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(KEY)
    with pytest.raises(FileNotFoundError):
        storage.sha256(KEY)
    with pytest.raises(FileNotFoundError), storage.local_path(KEY):
        pass


def test_local_path_is_removed_after_an_error(s3_server: S3Server, s3_bucket: str) -> None:
    storage = _storage(s3_server, s3_bucket)
    storage.write_bytes(KEY, b"mp3")
    with pytest.raises(RuntimeError), storage.local_path(KEY) as path:
        raise RuntimeError("ffmpeg failed")
    assert not path.exists()


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "x\x00", ".."])
def test_unsafe_keys_never_reach_the_server(s3_server: S3Server, s3_bucket: str, key: str) -> None:
    storage = _storage(s3_server, s3_bucket)
    with pytest.raises(UnsafeKeyError):
        storage.write_bytes(key, b"x")
    with pytest.raises(UnsafeKeyError):
        storage.delete(key)
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_bad_settings_are_refused(s3_server: S3Server) -> None:
    with pytest.raises(ValueError, match="sse"):
        S3Storage(s3_server.client(), "b", sse="none")
    with pytest.raises(ValueError, match="bucket"):
        S3Storage(s3_server.client(), "")
    with pytest.raises(UnsafeKeyError):
        S3Storage(s3_server.client(), "b", prefix="../up")


# dagster's own nested-resource init calls its deprecated InitResourceContext.dagster_run
@pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run:DeprecationWarning")
def test_resource_builds_s3_storage_in_a_run(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dg.asset
    def note(storage: StorageResource) -> str:
        return storage.get().write_text("logs/call_export_20261103T110500Z.jsonl", "{}\n").sha256

    # the shape definitions.py uses: a nested S3Resource with its endpoint from the environment
    monkeypatch.setenv("CALLTEXTS_TEST_S3_ENDPOINT", s3_server.endpoint_url)
    resource = S3StorageResource(
        backend="s3",
        s3_bucket=s3_bucket,
        s3_prefix="calltexts",
        s3=S3Resource(
            endpoint_url=dg.EnvVar("CALLTEXTS_TEST_S3_ENDPOINT"), region_name=s3_server.region
        ),
    )
    result = dg.materialize([note], resources={"storage": resource})
    assert result.success
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key="calltexts/logs/call_export_20261103T110500Z.jsonl"
    )
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == result.output_for_node("note")


def test_a_client_without_endpoint_still_stays_on_loopback(
    s3_server: S3Server, s3_bucket: str
) -> None:
    # The fixture's AWS_ENDPOINT_URL is the safety net for code that forgets the endpoint.
    storage = StorageResource(backend="s3", s3_bucket=s3_bucket).get()
    storage.write_bytes(KEY, b"x")
    assert s3_server.client().head_object(Bucket=s3_bucket, Key=KEY)["ContentLength"] == 1


def test_the_documented_lifecycle_rules_are_accepted_by_s3(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """deploy/s3/lifecycle.json, as the runbook applies it, on a versioned bucket."""
    rules = json.loads(
        (Path(__file__).resolve().parents[2] / "deploy/s3/lifecycle.json").read_text()
    )
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration=rules)
    stored = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert {r["ID"] for r in stored} == {r["ID"] for r in rules["Rules"]}
    multipart = next(r for r in stored if "AbortIncompleteMultipartUpload" in r)
    assert multipart["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1


def test_the_definitions_build_the_s3_store_from_the_settings(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """CALLTEXTS_STORAGE=s3 gives the resource with the nested, configured S3 client; the
    local backend a resource without one (no dagster-aws import for it, issue #26)."""
    from calltexts_assets.definitions import build_resources
    from calltexts_assets.settings import load_settings

    env = {"CALLTEXTS_HOME": str(tmp_path), "CALLTEXTS_S3_BUCKET": s3_bucket}
    on_s3 = build_resources(
        load_settings(
            {**env, "CALLTEXTS_STORAGE": "s3", "CALLTEXTS_S3_ENDPOINT_URL": s3_server.endpoint_url}
        )
    )["storage"]
    assert isinstance(on_s3, S3StorageResource) and on_s3.backend == "s3"
    assert on_s3.s3 is not None and on_s3.s3.endpoint_url == s3_server.endpoint_url
    on_s3.get().write_bytes(KEY, b"xy")
    assert s3_server.client().head_object(Bucket=s3_bucket, Key=KEY)["ContentLength"] == 2
    local = build_resources(load_settings(env))["storage"]
    assert type(local) is StorageResource and local.backend == "local"
    local.get().write_bytes(KEY, b"xyz")
    assert (tmp_path / KEY).read_bytes() == b"xyz"
