"""transcripts' per-call step: stored recording -> transcript file, cost and language; or,
at no cost, the transcript re-made from what the STT answered before (kept beside the
recording, `answers.py`) when the file went missing or changed, or the ledger lost the call."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from calltexts_assets.billing.budget import Reserve
from calltexts_assets.billing.cost import encode_request_seconds
from calltexts_assets.billing.tariffs import Tariffs, UnpricedModel
from calltexts_assets.clients.languages import UNDETERMINED
from calltexts_assets.clients.storage import Storage, unchanged_since
from calltexts_assets.files.storage_keys import file_id_of, transcript_key
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_assets.state.steps import StepOutcome
from calltexts_assets.transcripts.answers import store_answer, stored_transcript
from calltexts_assets.transcripts.dialogue import (
    DURATION_MISMATCH,
    SpeechToText,
    Transcript,
    transcribe_call,
)
from calltexts_assets.transcripts.file_format import TranscriptHeader, render_transcript
from calltexts_assets.transcripts.second_opinion import with_second_opinion

# A transcription error is retried by the next run; the download is never repeated for it.
TRANSCRIBABLE = {Status.DOWNLOADED, Status.TRANSCRIPTION_ERROR}
REMADE, ADOPTED = "remade", "adopted"  # outcomes that cost no STT request
log = scrubbed_logger(__name__)


def needs_transcript(record: CallRecord) -> bool:
    return record.status in TRANSCRIBABLE and bool(record.audio_path)


def transcript_intact(record: CallRecord, storage: Storage, *, verify: bool = False) -> bool:
    """A transcribed call's file is there as it was written (its sha256 in the ledger)."""
    if record.status != Status.TRANSCRIBED or not record.transcript_path:
        return True
    return unchanged_since(
        storage,
        record.transcript_path,
        record.transcript_sha256,
        record.transcript_written_at,
        verify=verify,
    )


def needs_work(record: CallRecord, storage: Storage, *, verify: bool = False) -> bool:
    """A call to transcribe, or a transcribed one whose file went missing or changed."""
    return needs_transcript(record) or (
        bool(record.audio_path) and not transcript_intact(record, storage, verify=verify)
    )


def stored_transcript_keys(storage: Storage, days: Sequence[date]) -> Iterator[str]:
    """Every transcript file in the month folders the days fall in (for the duplicates
    check), one at a time."""
    for month in sorted({day.strftime("%Y-%m") for day in days}):
        yield from storage.keys(f"exports/{month}/transcripts/")


def _written(
    record: CallRecord,
    transcript: Transcript,
    storage: Storage,
    *,
    labels: str,
    mask_phones: bool,
    sandbox: bool,
) -> dict[str, Any]:
    """The transcript file, written atomically under the stored recording's name (a re-run
    after a crash overwrites the same object: never a second transcript of one)."""
    assert record.audio_path
    key = transcript_key(file_id_of(record.audio_path), datetime.fromisoformat(record.started_at))
    text = render_transcript(
        TranscriptHeader.from_record(record, sandbox=sandbox),
        transcript,
        labels=labels,
        mask_phones=mask_phones,
    )
    data = text.encode("utf-8")
    storage.write_bytes(key, data)
    return {
        "transcript_path": key,
        "transcript_sha256": hashlib.sha256(data).hexdigest(),
        "transcript_written_at": datetime.now(UTC),
    }


@dataclass(frozen=True)
class SecondOpinion:
    """The fallback STT for doubtful calls (WHISPER_FALLBACK_MODEL)."""

    stt: SpeechToText
    expected_languages: tuple[str, ...] = ()  # WHISPER_LANGUAGE


def _transcribed(transcript: Transcript, tariffs: Tariffs) -> dict[str, Any]:
    """The ledger's updates of a transcribed call. Each model's requests are billed at its
    own tariff and unit, by the model that answered them (raises UnpricedModel when one has
    no known tariff)."""
    # An answer stored before `first_model` was kept, whose second opinion was kept, names
    # only the fallback: its first model is taken to be the configured one.
    first_model = transcript.first_model or ("" if transcript.fallback_kept else transcript.model)
    cost = tariffs.request_cost(first_model, transcript.billed_sec)
    if transcript.fallback_billed_sec:
        cost += tariffs.request_cost(
            transcript.fallback_model, transcript.fallback_billed_sec, fallback=True
        )
    return {
        "status": Status.TRANSCRIBED,
        # ISO 639-1 whatever the server answered; a call without speech "und".
        "language": transcript.language or UNDETERMINED,
        # the model `stt_request_sec`'s requests went to (the kept answer's, when the second
        # opinion's was kept, is `fallback_model`)
        "model": first_model or None,
        "stt_duration_sec": transcript.duration_sec,
        # What the service bills: each request it answered, in the model's unit.
        "cost": float(cost),
        "stt_requests": transcript.requests,
        "stt_sent_sec": round(transcript.sent_sec, 3),
        "stt_request_sec": encode_request_seconds(transcript.billed_sec),
        "role_mode": transcript.roles,
        "hallucinations": transcript.hallucinations,
        # no_speech: nothing sent, nothing billed; needs_review: a person should look
        "verdict": transcript.verdict or None,
        "doubts": ",".join(transcript.doubts) or None,
        "fallback_model": transcript.fallback_model or None,
        "fallback_request_sec": encode_request_seconds(transcript.fallback_billed_sec)
        if transcript.fallback_model
        else None,
        "fallback_kept": transcript.fallback_kept if transcript.fallback_model else None,
        # Transcribed, but flagged: the STT's account of the audio is not to be trusted
        # (the `stt_durations` check fails the period until someone looks).
        "error_code": DURATION_MISMATCH if transcript.duration_mismatch else None,
        "error_message": transcript.duration_mismatch or None,
    }


def transcribe_record(
    record: CallRecord,
    *,
    whisper: SpeechToText,
    storage: Storage,
    tariffs: Tariffs,
    role_mode: str,
    labels: str,
    mask_phones: bool,
    sandbox: bool,
    workdir: Path,
    send: str = "speech",
    fallback: SecondOpinion | None = None,
    expected_languages: tuple[str, ...] = (),
    reserve: Reserve | None = None,
) -> StepOutcome:
    """The recording to the STT (and, when its answer is doubtful, once to the fallback,
    whose expected cost is reserved first with `reserve`); what it answered is stored
    before the transcript."""
    assert record.audio_path
    with storage.local_path(record.audio_path) as path:

        def ask(stt: SpeechToText) -> Transcript:
            return transcribe_call(path, stt, role_mode=role_mode, workdir=workdir, send=send)

        def ask_fallback(first: Transcript) -> Transcript:
            assert fallback is not None
            if reserve is not None:  # the same audio, at the fallback's tariff and unit
                expected = tariffs.request_cost(fallback.stt.model, first.billed_sec, fallback=True)
                reserve(expected, f"the second opinion on call {record.call_id}")
            return ask(fallback.stt)

        transcript = with_second_opinion(
            ask(whisper),
            ask_fallback if fallback else None,
            expected_languages=fallback.expected_languages if fallback else expected_languages,
        )
    store_answer(storage, record, transcript)
    written = _written(
        record, transcript, storage, labels=labels, mask_phones=mask_phones, sandbox=sandbox
    )
    updates = _transcribed(transcript, tariffs)
    return StepOutcome("transcribed", {**written, **updates})


def from_stored_answer(
    record: CallRecord,
    *,
    storage: Storage,
    tariffs: Tariffs,
    labels: str,
    mask_phones: bool,
    sandbox: bool,
) -> StepOutcome | None:
    """The transcript re-made from the stored answer of this recording, at no cost: `remade`
    (the file was missing or changed), `adopted` (the ledger did not know the call was
    transcribed), costed by the models that answered; None when no stored answer can be
    trusted, or its cost cannot be told (a model no longer configured, without a list price:
    the call is asked again, at a tariff known)."""
    transcript = stored_transcript(storage, record)
    if transcript is None:
        return None
    updates: dict[str, Any] = {}
    if record.status != Status.TRANSCRIBED:
        try:
            updates = _transcribed(transcript, tariffs)
        except UnpricedModel as exc:
            log.warning("call %s: the stored answer is not adopted: %s", record.call_id, exc)
            return None
    written = _written(
        record, transcript, storage, labels=labels, mask_phones=mask_phones, sandbox=sandbox
    )
    if record.status == Status.TRANSCRIBED:
        return StepOutcome(REMADE, written)
    return StepOutcome(ADOPTED, {**written, **updates}, summed=False)  # paid by the run that asked


def stored_answer_first(
    record: CallRecord,
    *,
    stored: Callable[[CallRecord], StepOutcome | None],
    paid: Callable[[CallRecord], StepOutcome],
) -> StepOutcome:
    """What the STT answered before, else a request (the only path that costs)."""
    return stored(record) or paid(record)
