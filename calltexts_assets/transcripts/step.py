"""transcripts' per-call step: stored recording -> transcript file, cost and language."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

from calltexts_assets.billing.cost import encode_request_seconds, requests_cost_usd
from calltexts_assets.clients.languages import UNDETERMINED
from calltexts_assets.clients.storage import Storage
from calltexts_assets.files.storage_keys import file_id_of, transcript_key
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_assets.state.steps import StepOutcome
from calltexts_assets.transcripts.dialogue import (
    DURATION_MISMATCH,
    SpeechToText,
    transcribe_call,
)
from calltexts_assets.transcripts.file_format import TranscriptHeader, render_transcript

# A transcription error is retried by the next run; the download is never repeated for it.
TRANSCRIBABLE = {Status.DOWNLOADED, Status.TRANSCRIPTION_ERROR}


def needs_transcript(record: CallRecord) -> bool:
    return record.status in TRANSCRIBABLE and bool(record.audio_path)


def stored_transcript_keys(storage: Storage, days: Sequence[date]) -> Iterator[str]:
    """Every transcript file in the month folders the days fall in (for the duplicates
    check), one at a time."""
    for month in sorted({day.strftime("%Y-%m") for day in days}):
        yield from storage.keys(f"exports/{month}/transcripts/")


def transcribe_record(
    record: CallRecord,
    *,
    whisper: SpeechToText,
    storage: Storage,
    price_per_minute: float,
    billing_unit: str,
    role_mode: str,
    labels: str,
    mask_phones: bool,
    sandbox: bool,
    workdir: Path,
) -> StepOutcome:
    """The transcript is named after the stored recording and written atomically, so a
    re-run after a crash overwrites the same object: never a second transcript of one."""
    assert record.audio_path
    with storage.local_path(record.audio_path) as path:
        transcript = transcribe_call(path, whisper, role_mode=role_mode, workdir=workdir)
    key = transcript_key(file_id_of(record.audio_path), datetime.fromisoformat(record.started_at))
    text = render_transcript(
        TranscriptHeader.from_record(record, sandbox=sandbox),
        transcript,
        labels=labels,
        mask_phones=mask_phones,
    )
    storage.write_text(key, text)
    return StepOutcome(
        "transcribed",
        {
            "status": Status.TRANSCRIBED,
            "transcript_path": key,
            # ISO 639-1 whatever the server answered; a call without speech "und".
            "language": transcript.language or UNDETERMINED,
            "model": transcript.model,
            "stt_duration_sec": transcript.duration_sec,
            # What the service bills: each request it answered, in the model's unit.
            "cost": float(requests_cost_usd(transcript.billed_sec, price_per_minute, billing_unit)),
            "stt_requests": transcript.requests,
            "stt_sent_sec": round(transcript.sent_sec, 3),
            "stt_request_sec": encode_request_seconds(transcript.billed_sec),
            "role_mode": transcript.roles,
            "hallucinations": transcript.hallucinations,
            # Transcribed, but flagged: the STT's account of the audio is not to be trusted
            # (the `stt_durations` check fails the period until someone looks).
            "error_code": DURATION_MISMATCH if transcript.duration_mismatch else None,
            "error_message": transcript.duration_mismatch or None,
        },
    )
