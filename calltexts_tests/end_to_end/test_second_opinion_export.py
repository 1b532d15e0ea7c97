"""A whole export with a second opinion (issue #23 review): the asset graph through Dagster's
materialize against the sandbox, some calls doubtful (the sandbox's STT answers them unsure,
avg_logprob below -1), sent to a fallback model on a second STT server (a speaches-style
compatible one, billed per started minute at its set tariff). What the servers were asked is
counted, and the registry, the report, the QA sample and the checks are read from the files."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from calltexts_assets.assets import all_assets
from calltexts_assets.resources.openai import WhisperResource
from calltexts_assets.state.ledger import NEEDS_REVIEW, Status
from calltexts_sandbox.runtime import SANDBOX_API_KEY, Sandbox
from calltexts_sandbox.server import serve_in_thread
from calltexts_sandbox.stt import answers
from calltexts_sandbox.stt.app import SttEmulator
from calltexts_tests.support.sandboxed import TEST_RETRY_SCALE, materialize_range, sandbox_resources

DAY = "2026-11-01"
LABEL = f"{DAY}_{DAY}"
FIRST, FALLBACK = "whisper-1", "Systran/faster-whisper-small"
FIRST_PRICE, FALLBACK_PRICE = Decimal("0.006"), Decimal("0.01")  # per minute
DOUBTFUL, STILL_DOUBTFUL = 3, 1  # first answers unsure; of the second opinions, unsure


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")), delimiter=";"))


def _minutes_after(label: str, markdown: str) -> str:
    line = next(line for line in markdown.splitlines() if label in line)
    return re.findall(r"(\d+\.\d) (?:мин|min)", line)[-1]


def test_an_export_whose_doubtful_calls_go_to_a_fallback_on_a_second_server(
    sandbox: Sandbox, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    second = SttEmulator(api_key=SANDBOX_API_KEY, flavour=answers.SPEACHES)
    with serve_in_thread(second.app) as server:
        resources = sandbox_resources(
            sandbox, tmp_path,
            max_concurrency=1,  # one call at a time: the first calls are the unsure ones
            stt_model=FIRST, price_per_minute_usd=float(FIRST_PRICE), billing_unit="second",
            fallback_model=FALLBACK, fallback_price_per_minute_usd=float(FALLBACK_PRICE),
            fallback_billing_unit="minute",  # a compatible server's model: per started minute
        )  # fmt: skip
        resources["whisper"] = WhisperResource(
            api_key=SANDBOX_API_KEY, base_url=f"{sandbox.stt_url}/v1",
            retry_wait_scale=TEST_RETRY_SCALE, model=FIRST, fallback_model=FALLBACK,
            fallback_base_url=f"{server.url}/v1", fallback_api_key=SANDBOX_API_KEY,
        )  # fmt: skip
        sandbox.stt.set_faults(unsure={FIRST: DOUBTFUL})
        second.set_faults(unsure={FALLBACK: STILL_DOUBTFUL})
        result = materialize_range(all_assets, resources, instance, DAY, DAY)
        asked_first, asked_second = sandbox.stt.stats(), second.stats()
    assert result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []  # cost_matches, qa_sample, registry_complete, coverage, ... all pass

    # What the servers were asked: each call once of the first model, each doubtful call
    # once more of the fallback; none of the fallback's requests went to the first server.
    records = resources["ledger"].get().records([DAY])
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    first_sec = asked_first["by_model"][FIRST]
    second_sec = asked_second["by_model"][FALLBACK]
    assert set(asked_first["by_model"]) == {FIRST} and set(asked_second["by_model"]) == {FALLBACK}
    assert len(first_sec) == len(transcribed) > DOUBTFUL
    assert asked_first["unsure_by_model"] == {FIRST: DOUBTFUL}
    assert asked_second["unsure_by_model"] == {FALLBACK: STILL_DOUBTFUL}
    # the unsure answers are the calls doubtful by their logprobs (the sandbox's scripted text
    # may also read as a repetition loop: those calls go to the fallback too)
    unsure = [r for r in transcribed if "low_logprob" in (r.doubts or "").split(",")]
    assert len(unsure) == DOUBTFUL
    sent = [r for r in transcribed if r.fallback_model]
    assert {r.fallback_model for r in sent} == {FALLBACK} and set(unsure) <= set(sent)
    assert {r.call_id for r in sent} == {r.call_id for r in transcribed if r.doubts}
    assert len(second_sec) == sum(len(json.loads(r.fallback_request_sec)) for r in sent)
    review = [r for r in transcribed if r.verdict == NEEDS_REVIEW]
    assert 1 <= len(review) <= len(sent) and set(review) <= set(sent)
    assert all(r.model == FIRST for r in transcribed)  # whose requests stt_request_sec are

    # The bill, from what the servers heard: whisper-1's usage.seconds (whole seconds a
    # request), the fallback's audio per started minute; each at its own tariff.
    first_billed = sum(math.ceil(sec) for sec in first_sec)
    assert first_billed == asked_first["billed_seconds"]
    second_billed = sum(math.ceil(sec / 60) * 60 for sec in second_sec)
    cost = first_billed * FIRST_PRICE / 60 + second_billed * FALLBACK_PRICE / 60

    store = tmp_path / "store" / "exports" / LABEL
    registry = {row["call_id"]: row for row in _csv(store / f"registry/calls_{LABEL}.csv")}
    billed = [int(registry[r.call_id]["stt_billed_sec"]) for r in transcribed]
    assert sum(billed) == first_billed + second_billed
    costs = [Decimal(registry[r.call_id]["transcription_cost"].replace(",", ".")) for r in records
             if registry[r.call_id]["transcription_cost"]]  # fmt: skip
    assert sum(costs) == pytest.approx(cost, abs=Decimal("0.0001") * len(costs))
    assert sum(Decimal(str(r.cost)) for r in transcribed) == pytest.approx(cost)
    for r in review:
        assert registry[r.call_id]["needs_review"] == "yes"
        kept = "kept" if r.fallback_kept else "not kept"
        assert registry[r.call_id]["second_opinion"] == f"{FALLBACK}, {kept}"

    # The report: billed minutes are both models' (to 0.1 min), and the fallback's own line.
    markdown = (store / f"reports/summary_{LABEL}.md").read_text(encoding="utf-8")
    assert (
        _minutes_after("К оплате по счёту", markdown)
        == f"{(first_billed + second_billed) / 60:.1f}"
    )
    assert f"запросов: {len(second_sec)}, {second_billed / 60:.1f} мин" in markdown

    # The QA sample holds every call that needs review, with its doubts.
    sample = {row["call_id"]: row for row in _csv(store / f"reports/qa_sample_{LABEL}.csv")}
    for r in review:
        assert sample[r.call_id]["doubts"] == r.doubts
