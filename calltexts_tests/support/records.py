"""Ledger rows for the pure tests (registry, quality, report)."""

from __future__ import annotations

from typing import Any

from calltexts_assets.billing.cost import call_cost_usd
from calltexts_assets.state.ledger import CallRecord, ListedCall, Status, listed_values

PORTAL_NUMBER = "+74951234567"
CLIENT_NUMBER = "+79161234567"


def transcribed_record(
    n: int,
    *,
    day: str,
    call_id: str,
    started_at: str,
    seconds: float,
    incoming: bool = True,
    **changes: Any,
) -> CallRecord:
    """A transcribed call whose audio measures `seconds` and whose cost follows the tariff;
    `changes` override any field."""
    values: dict[str, Any] = {
        "run_id": day,
        "call_id": call_id,
        "record_id": f"rec{n}",
        "started_at": started_at,
        "call_type": 2 if incoming else 1,
        "direction": "incoming" if incoming else "outgoing",
        "phone_from": CLIENT_NUMBER if incoming else PORTAL_NUMBER,
        "phone_to": PORTAL_NUMBER if incoming else CLIENT_NUMBER,
        "portal_user_id": "7",
        "duration_sec": round(seconds),
        "recording_url": f"https://portal.example/rec/{n}.mp3",
        "audio_path": f"exports/2026-11/raw/2026/11/24/call_{call_id}.mp3",
        "audio_bytes": 1000,
        "checksum": "ab" * 32,
        "audio_duration_sec": seconds,
        "transcript_path": f"exports/2026-11/transcripts/call_{call_id}.txt",
        "language": "ru",
        "model": "whisper-1",
        "stt_duration_sec": seconds,
        "cost": float(call_cost_usd(seconds)),
        "summary_path": None,
        "tags": None,
        "status": Status.TRANSCRIBED,
        "error_code": None,
        "error_message": None,
        "attempts": 1,
        "dagster_run_id": "run-1",
        "stat_id": 1000 + n,
        "recording_url_signed": False,
        "failed_code": "200",
        "telephony_cost": "0.0000" if incoming else "1.8000",
        "telephony_currency": "RUR",
        "recording_source": "link",
    }
    values.update(changes)
    return CallRecord(**values)


def invalid_record(call_id: str, day: str, started_at: str = "") -> CallRecord:
    """A statistic row that could not be exported (no start time: it sorts last)."""
    return transcribed_record(
        0,
        day=day,
        call_id=call_id,
        started_at=started_at,
        seconds=0.0,
        record_id="",
        status=Status.INVALID,
        error_code="invalid_row",
        direction="",
        phone_from="",
        phone_to="",
        recording_url=None,
        audio_path=None,
        audio_bytes=None,
        checksum=None,
        audio_duration_sec=None,
        transcript_path=None,
        language=None,
        model=None,
        stt_duration_sec=None,
        cost=None,
        attempts=0,
        call_type=0,
        stat_id=None,
        failed_code=None,
        telephony_cost=None,
        telephony_currency=None,
        recording_source=None,
    )


def listed_record(call: ListedCall, day: str = "2026-11-24") -> CallRecord:
    """The ledger row of a call just listed (nothing downloaded yet)."""
    empty = dict.fromkeys(
        ("audio_path", "audio_bytes", "checksum", "audio_duration_sec", "transcript_path",
         "language", "model", "stt_duration_sec", "cost", "summary_path", "tags",
         "error_code", "error_message", "dagster_run_id"),
    )  # fmt: skip
    status = Status.LISTED if call.has_recording else Status.NO_RECORDING
    return CallRecord(**listed_values(day, call), **empty, status=status, attempts=0)
