"""Who took the call, on which line, for which CRM card (issue #24): from the sandbox
portal's `user.get` and `voximplant.line.get` into the ledger, the registry, the transcript
headers and the report, and what happens when the portal refuses the names."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets, call_list
from calltexts_assets.clients.bitrix24.client import Bitrix24Client
from calltexts_assets.listing.calls import normalize_phone
from calltexts_assets.listing.directory import refusal_note
from calltexts_assets.registry.rows import REGISTRY_COLUMNS
from calltexts_assets.state.ledger import Status
from calltexts_sandbox.calls.seed import EMPLOYEES, LINES
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import make_sandbox, materialize_range, sandbox_resources

DAY1, DAY2 = "2026-11-01", "2026-11-02"
PERIOD = f"{DAY1}_{DAY2}"
NEW_COLUMNS = (
    "employee_id",
    "employee_name",
    "line_id",
    "line_name",
    "crm_entity_type",
    "crm_entity_id",
    "crm_url",
)


def _name(user_id: str | None) -> str:
    first, last, _ = EMPLOYEES.get(user_id or "", ("", "", True))
    return f"{first} {last}".strip()


def _registry(store: Path) -> list[dict[str, str]]:
    path = store / f"exports/{PERIOD}/registry/calls_{PERIOD}.csv"
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig")), delimiter=";"))


def test_registry_transcripts_and_report_name_the_employee_line_and_crm_card(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    store = tmp_path / "store"
    rows = _registry(store)
    header = list(rows[0])
    # These columns came after the ones before them, whose names and order are unchanged
    # (later columns, such as the STT's seconds, follow them).
    start = header.index(NEW_COLUMNS[0])
    assert tuple(header[start : start + len(NEW_COLUMNS)]) == NEW_COLUMNS
    assert "call_id" in header[:start] and "audio_path" in header[:start]
    assert tuple(header) == REGISTRY_COLUMNS
    seeded = {row["CALL_ID"]: row for row in sandbox.portal.rows}
    assert len(rows) == len(seeded)
    for row in rows:
        listed = seeded[row["call_id"]]
        user = listed["PORTAL_USER_ID"] or ""
        assert row["employee_id"] == user
        assert row["employee_name"] == _name(user)  # "15" was deleted: no name, id kept
        line = normalize_phone(listed["PORTAL_NUMBER"])
        assert row["line_id"] == line  # a "+7..." line is phone-shaped: no formula guard
        assert row["line_name"] == LINES.get(line, "")
        kind, crm_id = listed["CRM_ENTITY_TYPE"], listed["CRM_ENTITY_ID"]
        expected = f"{sandbox.portal_url}/crm/{kind.lower()}/details/{crm_id}/" if kind else ""
        assert (row["crm_entity_type"], row["crm_entity_id"], row["crm_url"]) == (
            kind or "",
            crm_id or "",
            expected,
        )
    assert any(r["employee_name"] for r in rows) and any(r["line_name"] for r in rows)

    records = resources["ledger"].get().records([DAY1, DAY2])
    named = next(
        r for r in records if r.status == Status.TRANSCRIBED and r.employee_name and r.crm_url
    )
    text = (store / named.transcript_path).read_text("utf-8")
    assert f"Сотрудник: {named.employee_name} ({named.portal_user_id})\n" in text
    assert f"CRM: {named.crm_url}\n" in text
    header_lines = text.split("\n\n", 1)[0].splitlines()
    assert any(line.startswith("Линия: ") for line in header_lines)

    report = (store / f"exports/{PERIOD}/reports/summary_{PERIOD}.md").read_text("utf-8")
    employees = report.split("## По сотрудникам", 1)[1].split("\n## ", 1)[0]
    table = [line for line in employees.splitlines() if line.startswith("| ")][1:]
    labels = [line.split(" | ")[0].removeprefix("| ") for line in table]
    per_user: dict[str, list[int]] = {}
    for record in records:
        label = record.portal_user_id or "—"
        if record.employee_name:
            label = f"{record.employee_name} ({record.portal_user_id})"
        per_user.setdefault(label, [0, 0])
        per_user[label][0] += 1
        per_user[label][1] += record.duration_sec
    assert sorted(labels) == sorted(per_user)
    minutes = [float(line.split(" | ")[2]) for line in table]
    assert minutes == sorted(minutes, reverse=True)  # sorted by minutes, most first
    for line in table:
        label, calls = line.split(" | ")[:2]
        assert int(calls) == per_user[label.removeprefix("| ")][0]
    assert "## По линиям" in report


def test_without_user_brief_or_line_rights_the_ids_stay_and_one_note_says_why(
    audio_cache_dir: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    sandbox = make_sandbox(
        audio_cache_dir,
        days=2,
        calls_per_day=40,
        portal_config={"scopes": ("telephony", "disk"), "lines_visible": False},
    )
    try:
        resources = sandbox_resources(sandbox, tmp_path)
        result = materialize_range([call_list], resources, instance, DAY1, DAY2)
        assert result.success  # names are a courtesy: the export goes on
        records = resources["ledger"].get().records([DAY1, DAY2])
        assert len(records) == 80
        assert all(not r.employee_name and not r.line_name for r in records)
        assert {r.portal_user_id for r in records} - {""}  # the ids are kept
        # Asked once per run, not once per listing batch.
        assert sandbox.portal.request_count("user.get") == 1
        assert sandbox.portal.request_count("voximplant.line.get") == 1
    finally:
        sandbox.stop()
    event = instance.get_latest_materialization_event(dg.AssetKey("call_list"))
    assert event is not None and event.asset_materialization is not None
    note = event.asset_materialization.metadata["names_not_read"].value
    assert isinstance(note, str) and len(note.splitlines()) == 2
    assert "user_brief" in note and "insufficient_scope" in note
    assert "Management of numbers" in note and "ACCESS_DENIED" in note


def test_employee_names_are_asked_for_fifty_ids_a_command_in_one_batch(
    sandbox: Sandbox,
) -> None:
    client = Bitrix24Client(webhook_url=sandbox.webhook_url, requests_per_second=50)
    sandbox.portal.reset_stats()
    ids = [str(n) for n in range(1, 121)] + ["", "REST_APP:1"]  # non-numeric ids are skipped
    answer = client.employee_names(ids)
    assert answer.refused == ""
    assert answer.names == {key: _name(key) for key in EMPLOYEES}
    stats = sandbox.portal.stats()
    assert stats["http_requests"] == {"batch": 1}
    assert stats["requests"]["user.get"] == 3  # 120 ids: 50 + 50 + 20
    lines = client.line_names()
    assert lines.names == LINES
    client.close()


def test_a_directory_that_fails_leaves_the_ids_and_says_what_to_do() -> None:
    assert refusal_note("user.get: insufficient_scope") == (
        "employee names were not read (user.get: insufficient_scope): the registry and the "
        "report show employee ids only; add the `user_brief` scope to the webhook or "
        "application."
    )
    assert refusal_note("voximplant.line.get: http_503").endswith("; the next run asks again.")
