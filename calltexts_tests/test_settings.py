"""Every setting is checked before any work: one line per bad variable, naming it."""

from __future__ import annotations

import pytest

from calltexts_assets.clients.stt_models import PROFILES
from calltexts_assets.definitions import build_definitions
from calltexts_assets.settings import (
    LIST_PRICES_PER_MINUTE,
    VARIABLES,
    SettingsError,
    load_settings,
)

WEBHOOK = "https://portal.example.ru/rest/1/abc123def/"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CALLTEXTS_CONCURRENCY", "abc", "a whole number from 1 to 100"),
        ("CALLTEXTS_CONCURRENCY", "0", "a whole number from 1 to 100"),
        ("CALLTEXTS_CONCURRENCY", "-3", "a whole number from 1 to 100"),
        ("CALLTEXTS_TIMEZONE", "Mars/Olympus", "an IANA time zone"),
        ("CALLTEXTS_PARTITIONS_START", "2025-13-01", "a date YYYY-MM-DD"),
        ("STT_PRICE_PER_MINUTE_USD", "-0.006", "a number >= 0"),
        ("STT_PRICE_PER_MINUTE_USD", "nan", "a number >= 0"),
        ("USD_RUB_RATE", "0", "a number > 0"),
        ("CALLTEXTS_STORAGE", "s4", "one of local, s3"),
        ("CALLTEXTS_S3_SSE", "none", "one of AES256, aws:kms"),
        ("EXPORT_SUMMARY_ENABLED", "maybe", "true or false"),
        ("OPENAI_BASE_URL", "ftp://stt.local", "an http(s) URL"),
        ("BITRIX24_REQUESTS_PER_SECOND", "0", "a number > 0"),
        ("BITRIX24_SHARED_PACING", "shared", "true or false"),
        ("CALLTEXTS_BACKFILL_RUN_DAYS", "-1", "a whole number from 0 to 3660"),
        ("CALLTEXTS_BACKFILL_RUN_DAYS", "5 days", "a whole number from 0 to 3660"),
        ("CALLTEXTS_STT_MAX_IN_FLIGHT", "1.5", "a whole number from 0 to 1000"),
        ("CALLTEXTS_STT_MAX_IN_FLIGHT", "-2", "a whole number from 0 to 1000"),
        ("STT_BILLING_UNIT", "tokens", "one of model, second, minute"),
        ("CALLTEXTS_LANGUAGE", "de", "one of ru, en"),
        ("CALLTEXTS_CALL_ORDER", "shortest_first", "one of longest_first, day"),
        ("BITRIX24_PACE_DOWNLOADS", "sometimes", "true or false"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    [line] = info.value.problems
    assert line.startswith(f"{name}=") and expected in line


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLTEXTS_CONCURRENCY": "x", "CALLTEXTS_STORAGE": "s4"})
    assert [p.split("=")[0] for p in info.value.problems] == [
        "CALLTEXTS_STORAGE",
        "CALLTEXTS_CONCURRENCY",
    ]


def test_shared_limits_and_the_backfill_shape_default_to_one_run_and_no_stt_limit() -> None:
    defaults = load_settings({})
    assert (defaults.backfill_run_days, defaults.stt_max_in_flight) == (0, 0)
    assert defaults.bitrix24_shared_pacing is True
    chosen = load_settings({
        "CALLTEXTS_BACKFILL_RUN_DAYS": "5",
        "CALLTEXTS_STT_MAX_IN_FLIGHT": "40",
        "BITRIX24_SHARED_PACING": "false",
    })  # fmt: skip
    assert (chosen.backfill_run_days, chosen.stt_max_in_flight) == (5, 40)
    assert chosen.bitrix24_shared_pacing is False


def test_call_order_and_download_pacing_default_to_longest_first_and_paced() -> None:
    defaults = load_settings({})
    assert (defaults.call_order, defaults.bitrix24_pace_downloads) == ("longest_first", True)
    chosen = load_settings({"CALLTEXTS_CALL_ORDER": "day", "BITRIX24_PACE_DOWNLOADS": "false"})
    assert (chosen.call_order, chosen.bitrix24_pace_downloads) == ("day", False)


@pytest.mark.parametrize(
    "webhook",
    [
        "https://portal.example.ru/rest/1/half one/",  # a space in the code
        "https://portal.example.ru/rest/abc/code/",  # no user id
        "https://portal.example.ru/api/1/code/",
        "portal.example.ru/rest/1/code/",
        "https://portal.example.ru/rest/1/code/?auth=x",
    ],
)
def test_a_malformed_webhook_is_refused_without_quoting_it(webhook: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"BITRIX24_WEBHOOK_URL": webhook})
    [line] = info.value.problems
    assert line.startswith("BITRIX24_WEBHOOK_URL: expected https://<portal>/rest/")
    assert "code" not in line.split("expected", 1)[0] and "one" not in line


def test_secrets_are_kept_as_names_only() -> None:
    settings = load_settings({"BITRIX24_WEBHOOK_URL": WEBHOOK, "OPENAI_API_KEY": "sk-secret-value"})
    assert settings.credentials_configured and settings.openai_api_key
    assert "abc123def" not in repr(settings) and "sk-secret-value" not in repr(settings)


def test_dependent_settings() -> None:
    with pytest.raises(SettingsError, match="CALLTEXTS_S3_BUCKET: required"):
        load_settings({"CALLTEXTS_STORAGE": "s3"})
    with pytest.raises(SettingsError, match="BITRIX24_PORTAL_URL: required"):
        load_settings({"BITRIX24_OAUTH_TOKEN": "t"})


def test_defaults() -> None:
    settings = load_settings({})
    assert (settings.concurrency, settings.timezone, settings.storage_backend) == (
        10,
        "Europe/Moscow",
        "local",
    )
    assert not settings.credentials_configured
    assert settings.ledger_url() == settings.sqlite_url
    assert "CALLTEXTS_CONCURRENCY" in VARIABLES and "BITRIX24_WEBHOOK_URL" in VARIABLES


def test_the_language_of_what_people_read_reaches_the_assets() -> None:
    assert load_settings({}).language == "ru"
    english = build_definitions(load_settings({"CALLTEXTS_LANGUAGE": "en"}))
    assert (english.resources or {})["export_settings"].language == "en"


HASH = "a" * 64


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("crm:" + HASH, "line 1: expected name:sha256-hex-of-token:scope1,scope2"),
        ("# tokens\n\ncrm:abc:export:run", "line 3: the second field must be the token's"),
        (f"crm:{'z' * 64}:export:run", "line 1: the second field must be the token's SHA-256"),
        (f"crm:{HASH}:export:write", "line 1: scopes must be some of export:run"),
        (f"crm:{HASH}:", "line 1: scopes must be some of"),
        (f"crm x:{HASH}:metrics:read", "line 1: a token name is"),
        (f"crm:{HASH}:metrics:read:2026-13-01", "line 1: the last field is the day"),
        (f"crm:{HASH}:metrics:read:yesterday", "line 1: scopes must be some of"),
        (f"crm:{HASH}:metrics:read;crm:{HASH}:export:run", "line 2: token name crm repeated"),
    ],
)
def test_a_bad_token_line_is_one_line_naming_the_setting_and_the_line(
    lines: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLTEXTS_API_TOKENS": lines})
    [line] = info.value.problems
    assert line.startswith("CALLTEXTS_API_TOKENS ") and expected in line
    assert HASH not in line  # the line itself is never quoted


def test_tokens_from_a_mounted_file(tmp_path) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        f"# name:sha256:scopes:created\ncrm:{HASH.upper()}:export:run,export:read:2026-12-01\n"
        f"prometheus:{'b' * 64}:metrics:read\n"
    )
    tokens = load_settings({"CALLTEXTS_API_TOKENS_FILE": str(path)}).api_tokens
    assert [(t.name, t.sha256, sorted(t.scopes), str(t.created)) for t in tokens] == [
        ("crm", HASH, ["export:read", "export:run"], "2026-12-01"),
        ("prometheus", "b" * 64, ["metrics:read"], "None"),
    ]
    path.write_text(f"crm:{HASH}:export:run\nbad\n")
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLTEXTS_API_TOKENS_FILE": str(path)})
    assert info.value.problems == [
        f"CALLTEXTS_API_TOKENS_FILE={path} line 2: expected name:sha256-hex-of-token:"
        "scope1,scope2[:YYYY-MM-DD] (scopes: export:run, export:read, metrics:read; "
        "`calltexts api token create` prints one)"
    ]
    with pytest.raises(SettingsError, match="cannot read the token file"):
        load_settings({"CALLTEXTS_API_TOKENS_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="set one of them, not both"):
        load_settings({"CALLTEXTS_API_TOKENS_FILE": str(path), "CALLTEXTS_API_TOKENS": "x"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.20.0.0/16, 192.168.5.10", ("10.20.0.0/16", "192.168.5.10/32")),
        ("fd00:1::/64", ("fd00:1::/64",)),
        ("10.20.0.0/33", "is not a network"),
        ("pbx.local", "is not a network"),
        ("127.0.0.0/8", "overlaps loopback or link-local"),
        ("169.254.169.254/32", "overlaps loopback or link-local"),
        ("0.0.0.0/0", "overlaps loopback or link-local"),
    ],
)
def test_recording_networks(value: str, expected: object) -> None:
    if isinstance(expected, tuple):
        assert load_settings({"CALLTEXTS_RECORDING_NETWORKS": value}).recording_networks == expected
        return
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLTEXTS_RECORDING_NETWORKS": value})
    [line] = info.value.problems
    assert line.startswith("CALLTEXTS_RECORDING_NETWORKS: ") and str(expected) in line


def test_token_age_setting() -> None:
    assert load_settings({}).api_token_max_age_days == 90
    with pytest.raises(SettingsError, match="CALLTEXTS_API_TOKEN_MAX_AGE_DAYS"):
        load_settings({"CALLTEXTS_API_TOKEN_MAX_AGE_DAYS": "0"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WHISPER_FALLBACK_BASE_URL": "http://10.0.0.5:8000/v1"}, "WHISPER_FALLBACK_BASE_URL: "
         "set only with WHISPER_FALLBACK_MODEL"),
        ({"WHISPER_FALLBACK_MODEL": "gpt-transcribe"}, "WHISPER_FALLBACK_MODEL=gpt-transcribe is "
         "WHISPER_MODEL on the same server"),
        ({"WHISPER_MODEL": "whisper-1", "WHISPER_FALLBACK_MODEL": "gpt-transcribe"},
         "WHISPER_FALLBACK_MODEL=gpt-transcribe returns no word times, which STT_ROLE_MODE=energy"),
        ({"WHISPER_FALLBACK_MODEL": "whisper-1", "WHISPER_FALLBACK_BASE_URL": "stt.local"},
         "WHISPER_FALLBACK_BASE_URL='stt.local': expected an http(s) URL"),
        ({"WHISPER_FALLBACK_PRICE_PER_MINUTE_USD": "0.01"},
         "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD: set only with WHISPER_FALLBACK_MODEL"),
        # a model without a list price is never priced as another: its tariff must be set
        ({"WHISPER_FALLBACK_MODEL": "large-v3", "WHISPER_FALLBACK_BASE_URL": "http://10.0.0.5/v1"},
         "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD: WHISPER_FALLBACK_MODEL=large-v3 has no list "
         "price known to calltexts"),
        ({"WHISPER_MODEL": "Systran/faster-whisper-small"},
         "STT_PRICE_PER_MINUTE_USD: WHISPER_MODEL=Systran/faster-whisper-small has no list price"),
        ({"WHISPER_MODEL": "gpt-4o-mini-transcribe"},  # billed by tokens: no price per minute
         "STT_PRICE_PER_MINUTE_USD: WHISPER_MODEL=gpt-4o-mini-transcribe has no list price"),
    ],
)  # fmt: skip
def test_the_fallback_model_is_refused_in_one_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    [line] = info.value.problems
    assert line.startswith(expected)


def test_each_model_has_its_tariff() -> None:
    listed = load_settings(
        {"WHISPER_MODEL": "whisper-1", "WHISPER_FALLBACK_MODEL": "gpt-transcribe",
         "STT_ROLE_MODE": "turns"}
    )  # fmt: skip
    assert (listed.price_per_minute_usd, listed.whisper_fallback_price_per_minute_usd) == (
        0.006,
        0.0045,
    )
    own = load_settings(
        {
            "WHISPER_FALLBACK_MODEL": "large-v3",
            "WHISPER_FALLBACK_BASE_URL": "http://10.0.0.5:8000/v1",
            "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD": "0.002",
        }
    )
    assert own.whisper_fallback_price_per_minute_usd == 0.002
    # the settings' list prices are the model table's (clients/stt_models.py), one table
    assert {
        name: p.price_per_minute_usd
        for name, p in PROFILES.items()
        if p.price_per_minute_usd is not None
    } == LIST_PRICES_PER_MINUTE


def test_the_fallback_model_on_its_own_server() -> None:
    settings = load_settings(
        {
            "WHISPER_FALLBACK_MODEL": "gpt-transcribe",
            "WHISPER_FALLBACK_BASE_URL": "http://10.0.0.5:8000/v1/",
            "WHISPER_FALLBACK_API_KEY": "local-key",
        }
    )
    assert settings.whisper_fallback_model == "gpt-transcribe"
    assert settings.whisper_fallback_base_url == "http://10.0.0.5:8000/v1"
    assert settings.whisper_fallback_api_key and "local-key" not in repr(settings)
    assert load_settings({}).whisper_fallback_model == ""
