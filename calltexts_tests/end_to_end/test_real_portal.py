"""What a real portal does that the export once got wrong (issue #11), end to end against
the sandbox portal answering as one: Drive-only recordings, OAuth tokens that expire every
hour, OPERATION_TIME_LIMIT, a missing `disk` scope, WAV recordings, and no link's token in
anything the run leaves behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.assets import all_assets, call_list
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.state.ledger import Status
from calltexts_assets.state.token_store import TokenStore
from calltexts_sandbox.calls.seed import recording_format
from calltexts_sandbox.runtime import STORAGE_HOST, Sandbox
from calltexts_tests.end_to_end.test_faults import (
    DAY1,
    DAY2,
    asset_metadata,
    by_call,
    cap_durations,
    failure_text,
)
from calltexts_tests.support.sandboxed import (
    TEST_RETRY_SCALE,
    make_sandbox,
    materialize_range,
    sandbox_resources,
)


def drive_only(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Every recording kept only as a Drive file, as external phone systems attach them."""
    rows = sandbox.portal.rows
    for row in rows:
        if row["RECORD_FILE_ID"]:
            row["CALL_RECORD_URL"] = None
    sandbox.portal.set_rows(rows)
    return [r for r in rows if r["RECORD_FILE_ID"]]


@pytest.fixture
def big_sandbox(audio_cache_dir: Path) -> Iterator[Sandbox]:
    """2 days x 14 calls (about 25 recordings, WAV and mono among them), 20 s at most."""
    running = make_sandbox(audio_cache_dir, calls_per_day=14)
    cap_durations(running, 20)
    yield running
    running.stop()


def test_a_portal_whose_recordings_are_all_drive_files_exports_every_one(
    big_sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    recorded = drive_only(big_sandbox)
    wav = [r for r in recorded if recording_format(r["CALL_ID"]) == "wav"]
    assert len(recorded) >= 20 and wav, "the seed must hold Drive recordings in both formats"
    resources = sandbox_resources(big_sandbox, tmp_path)

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2)

    assert result.success
    records = by_call(resources["ledger"].get())
    for row in recorded:
        record = records[row["CALL_ID"]]
        assert record.status == Status.TRANSCRIBED, (record.status, record.error_message)
        assert record.recording_source == "drive" and record.recording_url is None
        # Stored under the format its bytes have; the STT took it under that name.
        assert record.audio_path.endswith(f".{recording_format(row['CALL_ID'])}")
    portal = big_sandbox.portal
    assert portal.request_count("disk.file.get") == len(recorded)
    # The links came in batches of up to 49 commands: one request for the whole period,
    # not one per call (the listing and the employees' names were the other batch requests;
    # the lines' names are one voximplant.line.get).
    served = {
        "batch": 3,
        "voximplant.line.get": 1,
        "download": len(recorded),
        "records": len(recorded),
    }
    assert portal.stats()["http_requests"] == served
    meta = asset_metadata(result, "raw_audio")
    assert meta["links_resolved_ahead"] == len(recorded) and meta["links_resolved_alone"] == 0
    assert meta["bitrix24_requests"] == 1 + len(recorded)  # one link batch, the downloads
    assert set(meta["recordings"]) <= {"drive/mp3", "drive/wav"}
    assert meta["recordings"]["drive/wav"] == len(wav)
    assert big_sandbox.stt.stats()["by_status"].get("400") is None


def test_a_missing_disk_scope_stops_the_downloads_once_naming_the_scope(
    audio_cache_dir: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    sandbox = make_sandbox(audio_cache_dir, portal_config={"scopes": ("telephony",)})
    try:
        cap_durations(sandbox)
        drive_only(sandbox)
        resources = sandbox_resources(sandbox, tmp_path)
        result = materialize_range(
            all_assets, resources, instance, DAY1, DAY2, raise_on_error=False
        )
    finally:
        sandbox.stop()
    assert not result.success
    text = failure_text(result)
    assert "raw_audio stopped" in text and "lacks the `disk` scope" in text
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed_steps == {"raw_audio_and_transcripts"}
    records = by_call(resources["ledger"].get())
    # Nothing is blamed on the calls: they wait, listed, for the scope to be granted.
    assert {r.status for r in records.values()} <= {Status.LISTED, Status.NO_RECORDING}


def oauth_resources(
    sandbox: Sandbox, root: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The sandbox resources with an OAuth application (`env`: its variables, by default a
    freshly installed one) instead of the webhook."""
    resources = sandbox_resources(sandbox, root)
    env = env or sandbox.oauth_environment()
    resources["bitrix24"] = Bitrix24Resource(
        portal_url=env["BITRIX24_PORTAL_URL"],
        oauth_token=env["BITRIX24_OAUTH_TOKEN"],
        oauth_refresh_token=env["BITRIX24_OAUTH_REFRESH_TOKEN"],
        client_id=env["BITRIX24_CLIENT_ID"],
        client_secret=env["BITRIX24_CLIENT_SECRET"],
        oauth_server=env["BITRIX24_OAUTH_SERVER"],
        token_store_url=resources["ledger"].database_url,
        requests_per_second=50,
        retry_wait_scale=TEST_RETRY_SCALE,
        recording_hosts=[STORAGE_HOST],
        allow_private_addresses=True,
    )
    return resources


def test_an_oauth_run_outlives_three_token_lifetimes(
    audio_cache_dir: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Access tokens live 0.8 s here (an hour on a real portal) and the downloads take
    longer than three of them: the client refreshes before expiry and after expired_token
    (a Drive link bound to a token that died meanwhile gets a fresh one), nothing fails."""
    sandbox = make_sandbox(audio_cache_dir, portal_config={"token_lifetime_sec": 0.8})
    try:
        cap_durations(sandbox)
        recorded = drive_only(sandbox)
        sandbox.portal.add_fault(kind="latency", target="records", delay_sec=0.35, times=None)
        env = sandbox.oauth_environment()
        resources = oauth_resources(sandbox, tmp_path, env)
        first = materialize_range(all_assets, resources, instance, DAY1, DAY2)
        before = sandbox.portal.stats()
        refreshes = before["token_refreshes"]
        # The next run, with the same environment, starts from the pair the last refresh
        # stored: the environment's tokens expired and its refresh token is spent.
        sandbox.portal.clear_faults()
        later = oauth_resources(sandbox, tmp_path, env)
        again = materialize_range([call_list], later, instance, DAY1, DAY2)
        after = sandbox.portal.stats()
    finally:
        sandbox.stop()
    assert first.success and again.success
    assert refreshes >= 3
    records = by_call(resources["ledger"].get())
    assert all(records[r["CALL_ID"]].status == Status.TRANSCRIBED for r in recorded)
    assert all(r.attempts == 0 for r in records.values())
    # The stored pair had expired too by then: the next run refreshed with the stored
    # refresh token, and the portal granted every refresh it was asked for (the
    # environment's refresh token would have been refused as used).
    asked = after["requests"]["oauth/token"] - before["requests"]["oauth/token"]
    granted = after["token_refreshes"] - refreshes
    assert asked == granted >= 1
    assert asset_metadata(again, "call_list")["bitrix24_token_refreshes"] == granted
    store = TokenStore.at(resources["ledger"].database_url)
    try:
        stored = store.load("127.0.0.1")
    finally:
        store.dispose()
    assert stored is not None and stored.refresh_token != env["BITRIX24_OAUTH_REFRESH_TOKEN"]


def test_an_operation_time_limit_storm_delays_the_listing_and_loses_nothing(
    audio_cache_dir: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The portal's own limiter: each statistic page costs 0.25 s of a 2 s budget that
    resets within a second; a 700-call listing runs into it again and again."""
    limits = {
        "operating_limit_sec": 2.0,
        "operating_window_sec": 1.0,
        "operating_cost_sec": {"voximplant.statistic.get": 0.25},
    }
    sandbox = make_sandbox(audio_cache_dir, calls_per_day=350, portal_config=limits)
    try:
        resources = sandbox_resources(sandbox, tmp_path)
        result = materialize_range([call_list], resources, instance, DAY1, DAY2)
        blocked = sandbox.portal.stats()["operation_time_limited"]
    finally:
        sandbox.stop()
    meta = asset_metadata(result, "call_list")
    assert blocked > 0 and meta["bitrix24_blocked"] > 0
    assert meta["bitrix24_operating_waits"] > 0 and meta["bitrix24_retries"] == 0
    ledger = resources["ledger"].get()
    assert sorted(by_call(ledger)) == sorted(r["CALL_ID"] for r in sandbox.portal.rows)
    assert ledger.count_rows() == 700


def test_no_token_of_any_link_is_left_anywhere_after_a_run(
    big_sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OAuth (tokens in every Drive link), signed storage links, one refused link, one
    missing file: afterwards no token the portal handed out is in the store, the ledger,
    the registry, the run log, the Python logs or the Dagster instance (event log and
    captured logs)."""
    caplog.set_level("DEBUG")
    rows = [r for r in big_sandbox.portal.rows if r["RECORD_FILE_ID"]]
    big_sandbox.portal.add_fault(
        kind="expired_token", target="records", times=None, record_ids=[rows[0]["RECORD_FILE_ID"]]
    )
    big_sandbox.portal.add_fault(
        kind="missing", target="records", times=None, record_ids=[rows[1]["RECORD_FILE_ID"]]
    )
    resources = oauth_resources(big_sandbox, tmp_path / "export")
    with dg.instance_for_test() as instance:
        result = materialize_range(
            all_assets, resources, instance, DAY1, DAY2, raise_on_error=False
        )
        events = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
        dagster_files = {
            f"dagster/{p.name}": p.read_bytes().decode("latin-1")
            for p in Path(instance.root_directory).rglob("*")
            if p.is_file()
        }
    records = by_call(resources["ledger"].get())
    assert records[rows[0]["CALL_ID"]].status == Status.DOWNLOAD_ERROR
    assert records[rows[1]["CALL_ID"]].status == Status.MISSING_AUDIO
    signed = [r for r in records.values() if r.recording_url_signed]
    assert signed and all("token=" not in (r.recording_url or "") for r in signed)

    secrets = big_sandbox.portal.secrets()
    assert len(secrets) > 10  # tokens were handed out: the search below means something
    places = {"python logs": caplog.text, "dagster events": events, **dagster_files}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            places[str(path.relative_to(tmp_path))] = path.read_bytes().decode("latin-1")
    leaks = {where: sorted(s[:8] for s in secrets if s in text) for where, text in places.items()}
    assert {where: found for where, found in leaks.items() if found} == {}
    assert any(re.search(r"token=\*\*\*", text) for text in places.values())  # masked
