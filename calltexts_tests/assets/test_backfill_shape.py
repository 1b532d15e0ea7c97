"""The backfill shape (CALLTEXTS_BACKFILL_RUN_DAYS) is Dagster's backfill policy of every
asset, and the results do not depend on it; the shared STT limit holds inside the runs."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.automation_tick_evaluation_context import (
    build_run_requests_with_backfill_policies,
)
from dagster._core.definitions.events import AssetKeyPartitionKey

from calltexts_assets.assets import all_assets
from calltexts_assets.definitions import build_definitions
from calltexts_assets.settings import load_settings
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import make_sandbox, materialize_range, sandbox_resources

FIRST, LAST = "2026-11-01", "2026-11-04"
HALVES = (("2026-11-01", "2026-11-02"), ("2026-11-03", "2026-11-04"))


@pytest.mark.parametrize(
    ("run_days", "expected"),
    [
        ("", dg.BackfillPolicy.single_run()),
        ("0", dg.BackfillPolicy.single_run()),
        ("5", dg.BackfillPolicy.multi_run(max_partitions_per_run=5)),
    ],
)
def test_every_asset_takes_the_backfill_policy_of_the_setting(
    run_days: str, expected: dg.BackfillPolicy
) -> None:
    defs = build_definitions(load_settings({"CALLTEXTS_BACKFILL_RUN_DAYS": run_days}))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    policies = {key: graph.get(key).backfill_policy for key in graph.get_all_asset_keys()}
    assert len(policies) == 7
    assert set(policies.values()) == {expected}


@pytest.mark.parametrize(("run_days", "runs"), [("0", 1), ("5", 6), ("7", 5)])
def test_a_30_day_backfill_is_cut_into_runs_of_the_setting(run_days: str, runs: int) -> None:
    """The run requests Dagster's backfill daemon makes of a 30-day backfill of every asset
    (asset_backfill.py calls this function with the backfill's partitions)."""
    defs = build_definitions(load_settings({"CALLTEXTS_BACKFILL_RUN_DAYS": run_days}))
    graph = defs.resolve_asset_graph()
    days = [(date(2026, 10, 1) + timedelta(days=n)).isoformat() for n in range(30)]
    wanted = [AssetKeyPartitionKey(key, day) for key in graph.get_all_asset_keys() for day in days]
    with dg.instance_for_test() as instance:
        requests = build_run_requests_with_backfill_policies(wanted, graph, instance)
    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    )
    assert len(ranges) == runs
    # Consecutive ranges that cover the 30 days once, each run with every asset.
    assert ranges[0][0] == days[0] and ranges[-1][1] == days[-1]
    gaps = {date.fromisoformat(b[0]) - date.fromisoformat(a[1]) for a, b in pairwise(ranges)}
    assert gaps <= {timedelta(days=1)}
    assert all(len(r.asset_selection or []) == 7 for r in requests)


@pytest.fixture
def four_days(audio_cache_dir: Path) -> Sandbox:
    running = make_sandbox(audio_cache_dir, days=4, calls_per_day=4)
    yield running
    running.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _call_files(root: Path) -> dict[str, str]:
    """Every per-call file (recordings, transcripts) and its digest."""
    exports = root / "store" / "exports"
    return {
        str(p.relative_to(exports)): _sha256(p)
        for p in exports.rglob("call_*")
        if p.parent.name in ("transcripts",) or "raw" in p.parts
    }


def _recording_downloads(sandbox: Sandbox) -> int:
    """Recordings served so far (links and Drive files), over the sandbox's life."""
    return sandbox.portal.stats()["http_requests"].get("records", 0)


def _registry(root: Path, first: str, last: str) -> Path:
    return root / "store" / "exports" / f"{first}_{last}" / "registry" / f"calls_{first}_{last}.csv"


def _rows(csv: Path) -> list[str]:
    return csv.read_text(encoding="utf-8-sig").splitlines()[1:]


def test_one_run_and_runs_of_two_days_give_the_same_files_and_registry(
    four_days: Sandbox, tmp_path: Path
) -> None:
    one, split = tmp_path / "one", tmp_path / "split"
    # The shared limit of the STT (1) is below each run's own concurrency (4).
    settings = {"stt_max_in_flight": 1}
    with dg.instance_for_test() as instance:
        one_run = sandbox_resources(four_days, one, **settings)
        assert materialize_range(all_assets, one_run, instance, FIRST, LAST).success
    transcribed_once = four_days.stt.stats()["transcriptions"]
    downloads_once = _recording_downloads(four_days)
    assert transcribed_once > 0
    assert four_days.stt.stats()["max_in_flight"] == 1
    four_days.stt.reset()

    with dg.instance_for_test() as instance:
        runs = sandbox_resources(four_days, split, **settings)
        # As a multi-run backfill of 2 days per run launches them.
        for first, last in HALVES:
            assert materialize_range(all_assets, runs, instance, first, last).success
        # Every call went to the STT once over both runs, never more than 1 at once.
        assert four_days.stt.stats()["transcriptions"] == transcribed_once
        assert four_days.stt.stats()["max_in_flight"] == 1
        # The registry of the whole period, from the ledger: no STT request, no download.
        # Every recording downloaded once over both runs, as by the one run.
        assert _recording_downloads(four_days) == 2 * downloads_once
        four_days.stt.reset()
        assert materialize_range(all_assets, runs, instance, FIRST, LAST).success
        assert four_days.stt.stats()["transcriptions"] == 0
        assert _recording_downloads(four_days) == 2 * downloads_once

    assert _call_files(split) == _call_files(one) != {}
    whole = _registry(one, FIRST, LAST)
    assert _sha256(_registry(split, FIRST, LAST)) == _sha256(whole)
    # Each run's own registry holds its days' rows, the same as the whole period's.
    halves = [row for first, last in HALVES for row in _rows(_registry(split, first, last))]
    assert halves == _rows(whole) != []
