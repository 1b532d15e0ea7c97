"""The registry_csv asset over a ledger filled directly (no sandbox): the file it streams is
the one the whole period gives at once, in the configured decimal mark, with the workbook
beside it."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import openpyxl
import pytest

from calltexts_assets.assets.checks import table_preview
from calltexts_assets.assets.registry_csv import registry_csv
from calltexts_assets.files.storage_keys import registry_key
from calltexts_assets.registry.rows import (
    masked_row,
    registry_frame,
    registry_rows,
    write_registry_csv,
)
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.ledger import CallRecord, Ledger, call_records
from calltexts_tests.support.records import invalid_record as invalid
from calltexts_tests.support.records import transcribed_record
from calltexts_tests.support.sandboxed import materialize_range

DAY1, DAY2 = "2026-11-23", "2026-11-24"


def record(n: int, day: str, **changes: Any) -> CallRecord:
    changes.setdefault("call_id", f"call.{n}")
    changes.setdefault("started_at", f"{day}T{n % 24:02d}:05:07+03:00")
    return transcribed_record(n, day=day, seconds=61.0, **changes)


def insert(ledger: Ledger, records: list[CallRecord]) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(call_records.insert(), [dataclasses.asdict(r) for r in records])


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    db = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield db
    db.dispose()


def test_the_asset_streams_the_file_the_whole_period_gives(
    ledger: Ledger, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    day1 = [record(n, DAY1, tags='["звонок; важный"]') for n in range(1, 8)]
    day1.append(invalid("bad.1", DAY1))
    day2 = [record(n, DAY2, phone_from="") for n in range(8, 14)]
    day2[0] = dataclasses.replace(day2[0], summary_path="exports/2026-11/summary/call_call.8.md")
    insert(ledger, [*day1, *day2, invalid("bad.0", DAY2)])
    work_dir = tmp_path / "work"
    resources = {
        "storage": StorageResource(backend="local", local_root=str(tmp_path / "store")),
        "ledger": LedgerResource(database_url=ledger.url),
        # the registry's step also holds the summaries (off here: never asked)
        "summariser": SummariserResource(base_url="http://127.0.0.1:9/v1"),
        # An English decimal mark, to see the setting reach both the file and its check.
        "export_settings": ExportSettings(
            csv_decimal_mark=".",
            work_dir=str(work_dir),
            log_dir=str(tmp_path / "logs"),
            billing_unit="minute",  # the records' costs are priced per started minute
        ),
    }

    result = materialize_range([registry_csv], resources, instance, DAY1, DAY2)

    key = registry_key(date.fromisoformat(DAY1), date.fromisoformat(DAY2))
    stored = (tmp_path / "store" / key).read_bytes()
    rows = registry_rows(ledger.records([DAY1, DAY2]), decimal_mark=".")
    # what the asset streamed is what the whole period gives at once
    assert stored == write_registry_csv(registry_frame(rows))
    assert [r["call_id"] for r in rows[-2:]] == ["bad.0", "bad.1"]

    materializations = [
        m
        for m in result.asset_materializations_for_node("summaries")  # the registry's step
        if m.asset_key == dg.AssetKey("registry_csv")
    ]
    assert len(materializations) == 2  # one per day of the range
    rows_of_day = {DAY1: 8, DAY2: 7}  # each day's own rows, its invalid row included
    for materialization in materializations:
        metadata = materialization.metadata
        assert metadata["rows"].value == rows_of_day[materialization.partition]
        assert metadata["run_totals"].value["rows"] == len(rows) == 15
        assert metadata["run_totals"].value["bytes"] == len(stored)
        # the first rows of the file, with the phone numbers masked (metadata is no deliverable)
        masked = registry_frame([masked_row(r) for r in rows])
        assert metadata["preview"] == table_preview(masked)
        assert "+79161234567" not in metadata["preview"].value
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {
        "duration_variance",
        "stt_durations",
        "registry_complete",
        "cost_matches",
    }
    assert all(c.passed for c in checks.values()), checks
    assert list(work_dir.iterdir()) == []  # the staged files are gone

    # The workbook beside it: the same rows, in the same order, typed.
    xlsx_key = registry_key(date.fromisoformat(DAY1), date.fromisoformat(DAY2), "xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "store" / xlsx_key, read_only=True)["calls"]
    table = list(sheet.iter_rows(values_only=True))
    assert list(table[0]) == list(rows[0])
    assert [r[table[0].index("call_id")] for r in table[1:]] == [r["call_id"] for r in rows]
    assert all(m.metadata["xlsx_path"].value.endswith(".xlsx") for m in materializations)
