"""Alert rules: every expression uses defined metrics; promtool validates and unit-tests them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from calltexts_assets.state.run_metrics import METRIC_NAMES

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "call_export.json"
RUNBOOK = REPO / "docs" / "runbooks" / "call_export.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)"
)

EXPECTED = {
    "CallExportRunFailed": "critical",
    "CallTranscriptErrorsHigh": "warning",
    "CallExportOverBudget": "warning",
    "Bitrix24RateLimited": "warning",
}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_PROMQL_WORDS |= {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# aggregation operators may be followed by `by (...)` rather than by "("
_PROMQL_WORDS |= {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count"}
_PROMQL_WORDS |= {"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        followed_by_call = expr[match.end() :].lstrip().startswith("(")
        if word.lower() in _PROMQL_WORDS or followed_by_call:
            continue
        names.add(word)
    return names


def test_the_four_alerts_with_their_severity() -> None:
    found = {rule["alert"]: rule["labels"]["severity"] for rule in rules()}
    assert found == EXPECTED
    run_failed = next(r for r in rules() if r["alert"] == "CallExportRunFailed")
    assert run_failed["for"] == "15m"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_expressions_use_only_defined_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, f"no metric found in {rule['expr']!r}"
    assert names <= METRIC_NAMES, f"undefined metrics: {sorted(names - METRIC_NAMES)}"


def test_the_name_extraction_itself() -> None:
    expr = 'sum by (job) (increase(a_total{status="x"}[5m])) / on (job) b > 0.01 and c'
    assert metric_names(expr) == {"a_total", "b", "c"}


def test_runbook_anchors_exist() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in headings, f"{rule['alert']}: no heading for #{anchor} in the runbook"


def test_dashboard_panels_use_only_defined_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 7
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= METRIC_NAMES, sorted(used - METRIC_NAMES)
    # every metric of the brief has a panel
    for name in (
        "call_export_runs_total",
        "call_transcripts_total",
        "call_export_duration_seconds_bucket",
        "call_transcription_minutes_total",
        "call_export_cost_total",
        "call_export_retry_total",
        "bitrix24_rate_limited_total",
    ):
        assert name in used, name


# -- promtool (when the Debian `prometheus` package is installed) -------------------------------


@needs_promtool
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _series(job: str = "api", **values: str) -> list[dict[str, str]]:
    names = {
        "failed": 'call_export_last_run_failed{job="%s"}',
        "ok": 'call_transcripts_total{job="%s",status="ok"}',
        "error": 'call_transcripts_total{job="%s",status="error"}',
        "run_cost": 'call_export_last_run_cost_usd{job="%s"}',
        "budget": 'call_export_budget_usd{job="%s"}',
        "limited": 'bitrix24_rate_limited_total{job="%s"}',
    }
    return [{"series": names[key] % job, "values": v} for key, v in values.items()]


def _fires(name: str, at: str, job: str = "api") -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": {"job": job, "severity": EXPECTED[name]}}],
    }


def _quiet(name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


UNIT_TESTS = [
    {  # everything goes wrong
        "interval": "1m",
        "input_series": _series(
            failed="0 0 1x40",  # the run failed at minute 2
            ok="0+100x40",
            error="0+2x40",  # ~2 % errors
            run_cost="40x10 60x30",  # a run costing 60 USD ends at minute 10
            budget="50x40",
            limited="0+1x40",  # 15 per 15 minutes
        ),
        "alert_rule_test": [
            _quiet("CallExportRunFailed", "10m"),  # failed, but for 8 minutes only
            _fires("CallExportRunFailed", "20m"),
            _fires("CallTranscriptErrorsHigh", "30m"),
            _quiet("CallExportOverBudget", "5m"),
            _fires("CallExportOverBudget", "20m"),
            _fires("Bitrix24RateLimited", "20m"),
        ],
    },
    {  # a healthy month: errors below 1 %, no budget set, few 429s, runs recover
        "interval": "1m",
        "input_series": _series(
            failed="0 1x5 0x40",  # failed, and fixed 5 minutes later
            ok="0+1000x40",
            error="0+5x40",  # 0.5 %
            run_cost="900x40",
            budget="0x40",
            limited="0+0.5x40",  # 7.5 per 15 minutes
        ),
        "alert_rule_test": [_quiet(name, at) for name in EXPECTED for at in ("20m", "35m")],
    },
]


@needs_promtool
def test_promtool_unit_tests_of_the_alerts(tmp_path: Path) -> None:
    # The annotations are templated prose; the tests judge when rules fire and with what
    # labels, so they run on a copy without annotations.
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    # The dashboard's queries must parse: on no data each one returns nothing.
    dashboard = json.loads(DASHBOARD.read_text())
    parse_only = {
        "interval": "1m",
        "input_series": [],
        "promql_expr_test": [
            {"expr": t["expr"], "eval_time": "1m", "exp_samples": []}
            for p in dashboard["panels"]
            for t in p["targets"]
        ],
    }
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m"}
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({**tests, "tests": [*UNIT_TESTS, parse_only]})
    )
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
