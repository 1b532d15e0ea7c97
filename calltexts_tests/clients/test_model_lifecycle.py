"""Models' shutdown dates from GET /v1/models: warn from 60 days before, refuse after."""

from __future__ import annotations

from datetime import date

from calltexts_assets.clients.model_lifecycle import (
    OK,
    REFUSE,
    UNKNOWN,
    WARN,
    notice,
    shutdown_dates,
)

# The documented shape: `shutdown_date` a YYYY-MM-DD string, or null when none is announced
# (openai_models.md §1); compatible servers leave it out.
LISTED = {
    "object": "list",
    "data": [
        {"id": "whisper-1", "object": "model", "created": 1, "owned_by": "system",
         "shutdown_date": "2027-02-26"},
        {"id": "gpt-transcribe", "object": "model", "created": 1, "owned_by": "system",
         "shutdown_date": None},
        {"id": "Systran/faster-whisper-small", "object": "model", "created": 0,
         "owned_by": "speaches"},
        {"id": "odd", "shutdown_date": "soon"},
        "junk",
    ],
}  # fmt: skip


def test_the_list_is_read_as_dates_and_nones() -> None:
    dates = shutdown_dates(LISTED)
    assert dates == {
        "whisper-1": date(2027, 2, 26),
        "gpt-transcribe": None,
        "Systran/faster-whisper-small": None,
        "odd": None,
    }
    assert shutdown_dates({"detail": "Not Found"}) == {} and shutdown_dates(None) == {}


def test_warned_from_60_days_before_with_the_replacement_named() -> None:
    dates = shutdown_dates(LISTED)
    early = notice("WHISPER_MODEL", "whisper-1", dates, date(2026, 12, 27))
    assert early.status == OK and early.message == ""
    warn = notice("WHISPER_MODEL", "whisper-1", dates, date(2026, 12, 28))
    assert warn.status == WARN and warn.days_left == 60
    assert "2027-02-26" in warn.message and "WHISPER_MODEL=gpt-transcribe" in warn.message


def test_refused_from_the_shutdown_day_in_one_line() -> None:
    refused = notice("WHISPER_MODEL", "whisper-1", shutdown_dates(LISTED), date(2027, 2, 26))
    assert refused.status == REFUSE
    assert "\n" not in refused.message and "set WHISPER_MODEL=gpt-transcribe" in refused.message


def test_no_date_no_list_or_an_unlisted_model_is_not_refused() -> None:
    dates = shutdown_dates(LISTED)
    today = date(2030, 1, 1)
    assert notice("WHISPER_MODEL", "gpt-transcribe", dates, today).status == OK
    assert notice("WHISPER_MODEL", "Systran/faster-whisper-small", dates, today).status == OK
    assert notice("WHISPER_MODEL", "whisper-1", None, today).status == UNKNOWN
    assert notice("SUMMARY_MODEL", "my-llm", dates, today).status == UNKNOWN
