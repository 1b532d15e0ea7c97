"""The code location loads as Dagster loads it, with every job, schedule, sensor and resource."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from calltexts_assets import definitions
from calltexts_assets.definitions import build_definitions, defs
from calltexts_assets.limits.ratelimit import RateLimiter
from calltexts_assets.settings import SettingsError, load_settings
from calltexts_assets.state.shared_limits import SharedRateLimiter

ASSETS = {
    "call_list",
    "raw_audio",
    "transcripts",
    "summaries",
    "registry_csv",
    "qa_sample",
    "cost_report",
}
DEFINITIONS_FILE = definitions.__file__
RESOURCES = {"bitrix24", "whisper", "summariser", "storage", "ledger", "export_settings"}


def test_the_code_location_loads() -> None:
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"calls_export", "retention"}
    assert {s.name for s in repository.schedule_defs} == {"daily_export", "weekly_catch_up"}
    assert {s.name for s in repository.sensor_defs} == {
        "record_export_success",
        "record_export_failure",
        "reap_dead_runs",
    }
    assert set(defs.resources or {}) == RESOURCES


def test_asset_keys_and_lineage_are_those_runs_were_recorded_under() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == ASSETS
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["raw_audio"] == {"call_list"}
    assert parents["transcripts"] == {"raw_audio"}
    assert parents["summaries"] == {"transcripts"}
    assert parents["registry_csv"] == {"summaries"}
    assert parents["cost_report"] == {"registry_csv"}
    assert parents["qa_sample"] == {"transcripts"}


def test_every_asset_finds_its_resources() -> None:
    graph = defs.resolve_asset_graph()
    for assets_def in graph.assets_defs:
        # io_manager: Dagster's default, for outputs no asset here hands over
        assert assets_def.required_resource_keys - {"io_manager"} <= RESOURCES, assets_def.keys


def test_a_bad_setting_stops_the_load_with_one_line_per_variable() -> None:
    with pytest.raises(SettingsError) as info:
        build_definitions(load_settings({"CALLTEXTS_CONCURRENCY": "0"}))
    assert str(info.value) == "CALLTEXTS_CONCURRENCY='0': expected a whole number from 1 to 100"


def test_descriptions_render_in_the_ui() -> None:
    """Markdown: a `<from>_<to>` outside a code span would vanish as an HTML tag."""
    graph = defs.resolve_asset_graph()
    texts = [graph.get(key).description or "" for key in graph.get_all_asset_keys()]
    texts += [spec.description or "" for a in graph.assets_defs for spec in a.check_specs]
    assert all(texts)
    for text in texts:
        outside_code = re.sub(r"`[^`]*`", "", text)
        assert not re.search(r"<[A-Za-z/]", outside_code), text


SCHEDULE_STATES = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { schedules { name scheduleState { status } } }
    }
  }
}
"""


@pytest.mark.parametrize(("variable", "status"), [(None, "STOPPED"), ("true", "RUNNING")])
def test_schedules_run_only_when_the_deployment_says_so(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, status: str
) -> None:
    """What the UI's Automation page shows, through its GraphQL API on a code server."""
    if variable is None:
        monkeypatch.delenv("CALLTEXTS_SCHEDULES_RUNNING", raising=False)
    else:
        monkeypatch.setenv("CALLTEXTS_SCHEDULES_RUNNING", variable)
    with (
        dg.instance_for_test() as instance,
        define_out_of_process_context(DEFINITIONS_FILE, "defs", instance) as context,
    ):
        result = execute_dagster_graphql(context, SCHEDULE_STATES)
    [repository] = result.data["repositoriesOrError"]["nodes"]
    states = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    assert states == {"daily_export": status, "weekly_catch_up": status}


def test_stt_settings_reach_the_resources_and_bad_ones_are_refused() -> None:
    settings = load_settings(
        {"STT_ROLE_MODE": "per_channel", "STT_MAX_UPLOAD_MB": "4", "STT_MAX_REQUEST_SEC": "600"}
    )
    resources = build_definitions(settings).resources or {}
    whisper = resources["whisper"].get_client()
    assert (whisper.max_file_bytes, whisper.max_request_sec) == (4 * 2**20, 600)
    assert resources["export_settings"].stt_role_mode == "per_channel"
    with pytest.raises(SettingsError) as info:
        load_settings({"STT_ROLE_MODE": "energy", "WHISPER_MODEL": "gpt-4o-mini-transcribe"})
    assert str(info.value).startswith("STT_ROLE_MODE=energy needs word or segment times")
    with pytest.raises(SettingsError, match="STT_ROLE_MODE='loud'"):
        load_settings({"STT_ROLE_MODE": "loud"})
    with pytest.raises(SettingsError, match="STT_MAX_REQUEST_SEC"):
        load_settings({"STT_MAX_REQUEST_SEC": "10"})


def test_defaults_work_after_the_2027_02_26_shutdowns() -> None:
    # openai_models.md §2: whisper-1 and the gpt-4o transcribe models shut down on
    # 2027-02-26, gpt-4o-mini on 2027-01-14; their replacements are the defaults.
    defaults = load_settings({})
    assert (defaults.whisper_model, defaults.summary_model) == ("gpt-transcribe", "gpt-6-luna")
    assert defaults.stt_role_mode == "turns"  # json only: each side's turns
    assert defaults.price_per_minute_usd == 0.0045  # its list price, billed by duration
    kept = load_settings({"WHISPER_MODEL": "whisper-1"})
    assert (kept.stt_role_mode, kept.price_per_minute_usd) == ("energy", 0.006)
    server = load_settings(
        {"WHISPER_MODEL": "Systran/faster-whisper-small", "STT_PRICE_PER_MINUTE_USD": "0.002"}
    )
    assert server.stt_role_mode == "energy"  # a compatible server with word times: one pass
    assert server.price_per_minute_usd == 0.002
    assert load_settings({"STT_PRICE_PER_MINUTE_USD": "0.003"}).price_per_minute_usd == 0.003


def test_keywords_are_checked_as_the_api_requires_before_any_work() -> None:
    # openai-cookbook: single-line literals without `<` or `>`, else the request is refused
    settings = load_settings({"WHISPER_KEYWORDS": "AC-42, Premium Plus"})
    assert settings.whisper_keywords == ("AC-42", "Premium Plus")
    resources = build_definitions(settings).resources or {}
    assert resources["whisper"].get_client().keywords == ("AC-42", "Premium Plus")
    for bad in ("<b>bold</b>", "a,,b", "one\ntwo"):
        with pytest.raises(SettingsError, match="WHISPER_KEYWORDS"):
            load_settings({"WHISPER_KEYWORDS": bad})
    with pytest.raises(SettingsError, match="takes no keywords"):
        load_settings({"WHISPER_KEYWORDS": "AC-42", "WHISPER_MODEL": "whisper-1"})


def test_settings_know_the_stt_modes_and_models_the_code_does() -> None:
    # settings.py imports nothing of the project: its copies must match the originals.
    from calltexts_assets import settings
    from calltexts_assets.clients.stt_models import JSON_ONLY_MODELS, PROFILES
    from calltexts_assets.transcripts.dialogue import ROLE_MODES

    assert settings.ROLE_MODES == ROLE_MODES
    assert settings.JSON_ONLY_MODELS == JSON_ONLY_MODELS
    priced = {m: p.price_per_minute_usd for m, p in PROFILES.items() if p.price_per_minute_usd}
    assert priced == settings.LIST_PRICES_PER_MINUTE
    assert {m for m, p in PROFILES.items() if p.language_list} == settings.KEYWORD_MODELS


def test_the_export_job_runs_its_steps_in_one_process() -> None:
    # Each step has its own concurrency; a process per step only adds start-up time.
    assert defs.resolve_job_def("calls_export").executor_def.name == "in_process"
    # What the UI launches (Materialize, a partition backfill) too.
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


@pytest.mark.parametrize(("shared", "expected"), [("", SharedRateLimiter), ("false", RateLimiter)])
def test_bitrix24_pacing_is_shared_through_the_ledger_database_unless_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared: str, expected: type
) -> None:
    webhook = "https://portal.example.ru/rest/1/abc123def/"
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", webhook)
    settings = load_settings({
        "BITRIX24_WEBHOOK_URL": webhook,
        "CALLTEXTS_HOME": str(tmp_path),
        "BITRIX24_SHARED_PACING": shared,
    })  # fmt: skip
    resource = build_definitions(settings).resources["bitrix24"]
    with dg.build_resources({"bitrix24": resource}) as built:
        limiter = built.bitrix24.get_client().limiter
    assert type(limiter) is expected
    if isinstance(limiter, SharedRateLimiter):  # one row per portal, in the ledger's file
        assert limiter.name == "bitrix24:portal.example.ru"
        assert str(limiter.engine.url) == settings.sqlite_url


@pytest.mark.parametrize(("pace", "order"), [("true", "longest_first"), ("false", "day")])
def test_download_pacing_and_call_order_reach_the_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pace: str, order: str
) -> None:
    webhook = "https://portal.example.ru/rest/1/abc123def/"
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", webhook)
    settings = load_settings({
        "BITRIX24_WEBHOOK_URL": webhook,
        "CALLTEXTS_HOME": str(tmp_path),
        "BITRIX24_PACE_DOWNLOADS": pace,
        "CALLTEXTS_CALL_ORDER": order,
    })  # fmt: skip
    resources = build_definitions(settings).resources or {}
    assert resources["export_settings"].call_order == order
    with dg.build_resources({"bitrix24": resources["bitrix24"]}) as built:
        assert built.bitrix24.get_client().pace_downloads is (pace == "true")
