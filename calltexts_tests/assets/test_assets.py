"""Asset behaviour against the sandbox over loopback: listing, download, transcription,
summaries, each through dagster's own materialize on a test instance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from calltexts_assets.assets import all_assets, call_list, raw_audio, summaries, transcripts
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.state.ledger import Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import make_sandbox, materialize_range, sandbox_resources

DAY1, DAY2 = "2026-11-01", "2026-11-02"
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _calls_with_recording(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [row for row in sandbox.portal.rows if row.get("RECORD_FILE_ID")]


@pytest.fixture
def listing_sandbox(audio_cache_dir: Path):
    running = make_sandbox(audio_cache_dir, days=3, calls_per_day=150)
    yield running
    running.stop()


def test_call_list_three_partitions_lists_exactly_the_seeded_calls(
    listing_sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    resources = sandbox_resources(listing_sandbox, tmp_path)
    result = materialize_range([call_list], resources, instance, DAY1, "2026-11-03")
    assert result.success
    seeded = listing_sandbox.portal.rows
    assert len(seeded) == 450
    records = resources["ledger"].get().records([DAY1, DAY2, "2026-11-03"])
    assert sorted((r.call_id, r.record_id) for r in records) == sorted(
        (row["CALL_ID"], str(row.get("RECORD_FILE_ID") or "")) for row in seeded
    )
    for day in (DAY1, DAY2, "2026-11-03"):
        assert sum(r.run_id == day for r in records) == 150
    # All three days in one listing: 450 rows are 9 pages, fetched in a single batch request;
    # the operators' names in one more (user.get, once per run), the lines' in one call.
    assert listing_sandbox.portal.request_count("batch") == 2
    assert listing_sandbox.portal.request_count("user.get") == 1
    materializations = instance.get_latest_materialization_events(
        [dg.AssetKey("call_list")]
    ).values()
    event = next(iter(materializations))
    assert event is not None
    metadata = event.asset_materialization.metadata
    assert metadata["calls"].value == 150  # the partition's own
    assert metadata["run_totals"].value["calls"] == 450


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_rerun_of_a_partition_adds_no_ledger_rows(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance, backend: str
) -> None:
    url = None
    if backend == "postgres":
        schema = f"ct_{os.getpid()}_{tmp_path.name[-8:]}".replace("-", "_").lower()
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    resources = sandbox_resources(sandbox, tmp_path, database_url=url)
    try:
        for _ in range(2):
            result = dg.materialize(
                [call_list], resources=resources, instance=instance, partition_key=DAY1
            )
            assert result.success
        ledger = resources["ledger"].get()
        assert ledger.count_rows() == sum(
            row["CALL_START_DATE"].startswith(DAY1) for row in sandbox.portal.rows
        )
        assert ledger.export(DAY1)["status"] == "running" or ledger.export(DAY1)
    finally:
        if backend == "postgres":
            resources["ledger"].get().dispose()
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def test_path_like_call_id_is_rejected_and_the_rest_exported(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    rows = sandbox.portal.rows
    evil = dict(rows[0], ID="999999", CALL_ID="../../../etc/passwd", RECORD_FILE_ID="31337")
    sandbox.portal.set_rows([*rows, evil])
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    assert result.success
    records = resources["ledger"].get().records([DAY1, DAY2])
    invalid = [r for r in records if r.status == Status.INVALID]
    assert len(invalid) == 1
    assert "etc/passwd" in (invalid[0].error_message or "")
    assert invalid[0].call_id.startswith("invalid-")
    assert not any("passwd" in str(p) for p in tmp_path.rglob("*"))
    assert sum(r.status == Status.TRANSCRIBED for r in records) == len(rows) - sum(
        not row.get("RECORD_FILE_ID") for row in rows
    )


def test_404_recording_is_missing_audio_and_not_downloaded_again(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    gone = _calls_with_recording(sandbox)[0]
    sandbox.portal.add_fault(
        kind="missing", target="records", times=None, record_ids=[gone["RECORD_FILE_ID"]]
    )
    assert materialize_range([call_list, raw_audio], resources, instance, DAY1, DAY2).success
    ledger = resources["ledger"].get()
    by_id = {r.call_id: r for r in ledger.records([DAY1, DAY2])}
    assert by_id[gone["CALL_ID"]].status == Status.MISSING_AUDIO
    assert by_id[gone["CALL_ID"]].error_code == "http_404"
    downloaded = [r for r in by_id.values() if r.status == Status.DOWNLOADED]
    assert len(downloaded) == len(_calls_with_recording(sandbox)) - 1
    assert all(r.checksum and r.audio_bytes for r in downloaded)

    sandbox.portal.reset_stats()
    assert materialize_range([raw_audio], resources, instance, DAY1, DAY2).success
    assert sandbox.portal.request_count("records") == 0


def test_whisper_400_is_recorded_not_retried_and_retried_by_the_next_run(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    assert materialize_range([call_list, raw_audio], resources, instance, DAY1, DAY2).success
    # A new resource: Dagster ignores pydantic's model_copy(update=...) at run time.
    resources["export_settings"] = ExportSettings(
        is_sandbox=True,
        max_concurrency=1,
        log_dir=resources["export_settings"].log_dir,
        work_dir=resources["export_settings"].work_dir,
    )
    sandbox.stt.set_faults(bad_request_on={1})
    assert materialize_range([transcripts], resources, instance, DAY1, DAY2, raise_on_error=False)
    ledger = resources["ledger"].get()
    failed = [r for r in ledger.records([DAY1, DAY2]) if r.status == Status.TRANSCRIPTION_ERROR]
    assert len(failed) == 1
    assert failed[0].error_code == "400"
    assert failed[0].attempts == 1
    with_audio = len(_calls_with_recording(sandbox))
    # One 400 (no retry) plus one request per other call's channels.
    stats = sandbox.stt.stats()
    assert stats["by_status"].get("400") == 1

    sandbox.stt.reset()
    assert materialize_range([transcripts], resources, instance, DAY1, DAY2).success
    records = ledger.records([DAY1, DAY2])
    assert sum(r.status == Status.TRANSCRIBED for r in records) == with_audio
    assert sandbox.portal.request_count("records") == with_audio  # nothing downloaded twice
    assert sandbox.stt.stats()["by_status"].get("400") is None


def test_summaries_follow_the_flag_and_skip_error_calls(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    gone = _calls_with_recording(sandbox)[0]
    sandbox.portal.add_fault(
        kind="missing", target="records", times=None, record_ids=[gone["RECORD_FILE_ID"]]
    )
    upstream = [call_list, raw_audio, transcripts, summaries]
    assert materialize_range(upstream, resources, instance, DAY1, DAY2).success
    assert not list(tmp_path.rglob("summary/*.md"))
    assert sandbox.stt.stats()["chat_completions"] == 0

    on = {"ops": {"summaries": {"config": {"generate_summary": True}}}}
    assert materialize_range([summaries], resources, instance, DAY1, DAY2, run_config=on).success
    records = resources["ledger"].get().records([DAY1, DAY2])
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    assert {p.name for p in tmp_path.rglob("summary/*.md")} == {
        f"call_{r.call_id}.md" for r in transcribed
    }
    assert all(r.tags for r in transcribed)
    assert not any(r.summary_path for r in records if r.status != Status.TRANSCRIBED)
    summary = next(tmp_path.rglob("summary/*.md")).read_text(encoding="utf-8")
    assert "Теги:" in summary


def test_export_to_s3_encrypts_every_object(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance, s3_bucket: Any, s3_server: Any
) -> None:
    from dagster_aws.s3 import S3Resource

    from calltexts_assets.resources.s3_storage import S3StorageResource

    resources = sandbox_resources(sandbox, tmp_path)
    resources["storage"] = S3StorageResource(
        backend="s3",
        s3_bucket=s3_bucket,
        s3_prefix="calltexts",
        sse="AES256",
        s3=S3Resource(endpoint_url=s3_server.endpoint_url, region_name="us-east-1"),
    )
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    client = s3_server.client("s3")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(k.endswith(".mp3") for k in keys) and any(k.endswith(".txt") for k in keys)
    assert any(k.endswith(".csv") for k in keys) and any(k.endswith(".pdf") for k in keys)
    for key in keys:
        head = client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
    assert not list(tmp_path.rglob("*.mp3"))  # nothing left on local disk
