"""What the STT answered for a call, kept beside its recording (`call_<id>.stt.json.gz`).

The document holds each answer as it came (the body, and where its piece lies in the
recording), the dialogue made of them, and what the requests billed, under an envelope that
names the call and the recording's sha256. From it a transcript deleted or edited by hand
is re-made byte for byte, and a ledger that was lost is rebuilt, without a request to the
STT. It is trusted only when it parses, is of this format, names the same call and the
recording it was made of is the one stored now (same sha256).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from calltexts_assets.clients.storage import Storage
from calltexts_assets.files.storage_keys import file_id_of, stt_answer_key
from calltexts_assets.state.ledger import CallRecord
from calltexts_assets.transcripts.dialogue import Transcript
from calltexts_assets.transcripts.lines import DialogueLine

FORMAT = "calltexts/stt-answer/1"


def answer_key(record: CallRecord) -> str:
    assert record.audio_path
    return stt_answer_key(file_id_of(record.audio_path), datetime.fromisoformat(record.started_at))


def answer_document(record: CallRecord, transcript: Transcript) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "call": {"call_id": record.call_id, "record_id": record.record_id},
        "recording": {
            "key": record.audio_path,
            "sha256": record.checksum,
            "bytes": record.audio_bytes,
        },
        "transcript": {
            "language": transcript.language,
            "duration_sec": transcript.duration_sec,
            "model": transcript.model,
            "requests": transcript.requests,
            "pieces": transcript.pieces,
            "roles": transcript.roles,
            "sent_sec": transcript.sent_sec,
            "billed_sec": list(transcript.billed_sec),
            "hallucinations": transcript.hallucinations,
            "duration_mismatch": transcript.duration_mismatch,
            "verdict": transcript.verdict,
            "speech_sec": transcript.speech_sec,
            "low_logprob_share": transcript.low_logprob_share,
            "unheard_sec": transcript.unheard_sec,
            "doubts": list(transcript.doubts),
            "fallback_model": transcript.fallback_model,
            "first_model": transcript.first_model,
            "fallback_billed_sec": list(transcript.fallback_billed_sec),
            "fallback_kept": transcript.fallback_kept,
            "lines": [asdict(line) for line in transcript.lines],
        },
        "answers": list(transcript.answers),
        # the other model's answers (a second opinion not kept, or the first one replaced)
        "other_answers": list(transcript.other_answers),
    }


def store_answer(storage: Storage, record: CallRecord, transcript: Transcript) -> str:
    """Written before the transcript: whatever the ledger or the transcript file lose after
    the STT was paid, this stays."""
    key = answer_key(record)
    document = json.dumps(answer_document(record, transcript), ensure_ascii=False)
    storage.write_bytes(key, gzip.compress(document.encode("utf-8"), mtime=0))
    return key


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _transcript_of(document: dict[str, Any]) -> Transcript:
    made = document["transcript"]
    return Transcript(
        language=str(made["language"]),
        duration_sec=float(made["duration_sec"]),
        lines=tuple(
            DialogueLine(
                start=float(line["start"]),
                speaker=str(line["speaker"]),
                text=str(line["text"]),
                end=float(line["end"]),
            )
            for line in made["lines"]
        ),
        model=str(made["model"]),
        requests=int(made["requests"]),
        pieces=int(made["pieces"]),
        roles=str(made["roles"]),
        sent_sec=float(made["sent_sec"]),
        billed_sec=tuple(float(sec) for sec in made["billed_sec"]),
        hallucinations=int(made["hallucinations"]),
        duration_mismatch=str(made.get("duration_mismatch", "")),
        verdict=str(made.get("verdict") or ""),
        speech_sec=_optional_float(made.get("speech_sec")),
        low_logprob_share=_optional_float(made.get("low_logprob_share")),
        unheard_sec=_optional_float(made.get("unheard_sec")),
        doubts=tuple(str(signal) for signal in made.get("doubts") or ()),
        fallback_model=str(made.get("fallback_model") or ""),
        first_model=str(made.get("first_model") or ""),
        fallback_billed_sec=tuple(float(sec) for sec in made.get("fallback_billed_sec") or ()),
        fallback_kept=bool(made.get("fallback_kept")),
        answers=tuple(document["answers"]),
        other_answers=tuple(document.get("other_answers") or ()),
    )


def stored_transcript(storage: Storage, record: CallRecord) -> Transcript | None:
    """The transcript the stored answer holds, when it is one of this call's recording as
    stored now (`record.checksum`); None when there is none or it cannot be trusted."""
    if not record.audio_path or not record.checksum:
        return None
    try:
        document = json.loads(gzip.decompress(storage.read_bytes(answer_key(record))))
        if document.get("format") != FORMAT:
            return None
        call, recording = document["call"], document["recording"]
        if (call["call_id"], call["record_id"]) != (record.call_id, record.record_id):
            return None
        if recording["sha256"] != record.checksum:
            return None
        return _transcript_of(document)
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, cut short or edited: the STT is asked again
