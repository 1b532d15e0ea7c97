"""README's configuration table lists exactly the variables settings.py reads."""

from __future__ import annotations

import re
from pathlib import Path

from calltexts_assets.settings import DAGSTER_ENVIRONMENT, VARIABLES

README = Path(__file__).resolve().parents[1] / "README.md"
# Read by Dagster itself (the instance), not by the project's code (DAGSTER_HOME is read by
# both: settings checks it before `calltexts run` opens the instance; `calltexts dev` runs
# `dagster dev` there).
DAGSTER_OWN = {
    "DAGSTER_PG_URL",
    *DAGSTER_ENVIRONMENT,  # Dagster's own, which calltexts sets when the deployment does not
}


def _table_variables() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell)
    return names


def test_the_readme_table_is_the_settings() -> None:
    listed = _table_variables()
    assert len(listed) == len(set(listed)), "a variable is listed twice"
    assert set(listed) - DAGSTER_OWN == set(VARIABLES)
