"""What users see of a run in the Dagster UI and the files: no phone number in the event log,
each partition's own figures, an empty period said to be empty."""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
from dagster._serdes import serialize_value

from calltexts_assets.assets import all_assets
from calltexts_assets.sandbox.runtime import Sandbox
from calltexts_assets.testing.sandboxed import materialize_range

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def test_no_phone_number_reaches_the_event_log(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    numbers = {
        _digits(row[field])
        for row in sandbox.portal.rows
        for field in ("PHONE_NUMBER", "PORTAL_NUMBER")
        if len(_digits(row.get(field) or "")) >= 7
    }
    assert numbers
    logged = [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    assert len(logged) > 50  # materializations, checks, step events: the whole run
    text = "\n".join(logged)
    digits_only = re.sub(r"\D", "", text)  # "+7 916 123-45-67" in any spelling
    found = [n for n in numbers if n in digits_only]
    assert not found, f"unmasked numbers in the event log: {found[:3]}"
