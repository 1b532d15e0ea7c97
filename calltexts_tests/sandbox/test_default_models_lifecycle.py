"""The embedded default (no credentials: the sandbox) must not run on models that are shut
down, or about to be, a year from now: the emulator refuses nothing by itself, but the
export's preflight reads its `GET /v1/models` and refuses a model past its `shutdown_date`
(and warns 60 days before), so a default on such a model breaks `make demo` and every test
that runs the default on a date nobody chose (issue #22: whisper-1 on 2027-02-26)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from calltexts_assets.clients.model_lifecycle import OK, WARN_DAYS, notice, shutdown_dates
from calltexts_assets.settings import load_settings
from calltexts_sandbox.runtime import Sandbox
from calltexts_sandbox.stt import answers


def embedded_default_models() -> dict[str, str]:
    """The models a run on the embedded default uses: the settings' defaults with what the
    sandbox sets where the user set nothing (`sandbox_environment`, `calltexts sandbox`)."""
    settings = load_settings(Sandbox.model_defaults())
    return {"WHISPER_MODEL": settings.whisper_model, "SUMMARY_MODEL": settings.summary_model}


def test_the_embedded_defaults_models_outlive_next_year() -> None:
    a_year_on = date.today() + timedelta(days=365)  # 2027-12-07 when written
    listed = shutdown_dates({"data": answers.model_list(answers.OPENAI, answers.SHUTDOWN_DATES)})
    for setting, model in embedded_default_models().items():
        found = notice(setting, model, listed, a_year_on)
        assert found.status == OK, (
            f"{setting}={model} as the embedded default: {found.status} on {a_year_on} "
            f"(shutdown {found.shutdown}, warned {WARN_DAYS} days before) {found.message}"
        )


def test_the_check_fails_for_a_model_that_shuts_down() -> None:
    """The same evaluation on whisper-1 (the sandbox's old default) refuses it."""
    listed = shutdown_dates({"data": answers.model_list(answers.OPENAI, answers.SHUTDOWN_DATES)})
    a_year_on = date.today() + timedelta(days=365)
    assert notice("WHISPER_MODEL", "whisper-1", listed, a_year_on).status != OK
    assert notice("WHISPER_MODEL", "whisper-1", listed, date(2026, 12, 1)).status == OK


def test_a_model_the_user_chose_keeps_its_own_role_method() -> None:
    assert Sandbox.defaults_for({}) == Sandbox.model_defaults()
    chosen = Sandbox.defaults_for({"WHISPER_MODEL": "whisper-1"})
    assert "WHISPER_MODEL" not in chosen and "STT_ROLE_MODE" not in chosen
    assert load_settings({"WHISPER_MODEL": "whisper-1", **chosen}).stt_role_mode == "energy"
    assert Sandbox.defaults_for({"STT_SEND": "speech"}).keys() == {"WHISPER_MODEL", "STT_ROLE_MODE"}


def test_the_newcomers_sandbox_holds_speech_and_runs_the_products_own_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`calltexts run`/`estimate`/`dev` without credentials seed speech calls
    (docs/specs/sandbox_call_content.md): the product's turns and STT_SEND=speech apply, on a
    model that outlives next year; without espeak-ng, the tone calls and their settings."""
    from calltexts_assets.ops.cli import _parser
    from calltexts_sandbox import runtime

    assert _parser().parse_args(["run"]).sandbox_content == "speech"
    assert _parser().parse_args(["estimate"]).sandbox_content == "speech"
    assert _parser().parse_args(["dev"]).content == "speech"
    assert _parser().parse_args(["sandbox", "serve"]).content == "tones"
    defaults = Sandbox.defaults_for({}, "speech")
    assert defaults == {"WHISPER_MODEL": "gpt-transcribe"}
    settings = load_settings(defaults)
    assert (settings.stt_role_mode, settings.stt_send) == ("turns", "speech")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/" + name)
    assert runtime.available_content("speech") == ("speech", "")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    content, note = runtime.available_content("speech")
    assert content == "tones" and note.startswith(
        "espeak-ng not found: the SANDBOX calls are tones"
    )
    assert runtime.available_content("tones") == ("tones", "")
