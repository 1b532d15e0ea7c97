"""summaries' per-call step: transcript -> summary/call_<id>.md with tags. What the chat
model answered is kept beside the recording (`call_<id>.summary.json.gz`): a summary that
went missing or changed, or a call a lost ledger forgot was summarised, is re-made from it
without asking the model again."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.storage import Storage, unchanged_since
from calltexts_assets.files.storage_keys import file_id_of, summary_answer_key, summary_key
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_assets.state.steps import StepOutcome
from calltexts_assets.summaries.prompt import summarise

FORMAT = "calltexts/summary-answer/1"
REMADE, ADOPTED = "remade", "adopted"  # outcomes that cost no request


def summary_intact(record: CallRecord, storage: Storage, *, verify: bool = False) -> bool:
    if not record.summary_path:
        return False
    return unchanged_since(
        storage,
        record.summary_path,
        record.summary_sha256,
        record.summary_written_at,
        verify=verify,
    )


def needs_summary(record: CallRecord, storage: Storage, *, verify: bool = False) -> bool:
    # Calls in an error status have no transcript worth summarising.
    return record.status == Status.TRANSCRIBED and not summary_intact(
        record, storage, verify=verify
    )


def dialogue_of(transcript_file: str) -> str:
    """The dialogue lines of a transcript file (after the header's blank line)."""
    _header, _blank, dialogue = transcript_file.partition("\n\n")
    return dialogue.strip()


def summary_document(record: CallRecord, markdown: str, tags: list[str]) -> str:
    tag_line = ", ".join(tags) if tags else "—"
    return f"# Звонок {record.call_id}\n\n{markdown.strip()}\n\nТеги: {tag_line}\n"


def _answer_key(record: CallRecord) -> str:
    assert record.audio_path
    return summary_answer_key(
        file_id_of(record.audio_path), datetime.fromisoformat(record.started_at)
    )


def _stored_answer(record: CallRecord, storage: Storage) -> tuple[str, list[str]] | None:
    """(markdown, tags) the model answered for this call's transcript as it is now."""
    if not record.audio_path:
        return None
    try:
        document = json.loads(gzip.decompress(storage.read_bytes(_answer_key(record))))
        call = document["call"]
        if document.get("format") != FORMAT or (call["call_id"], call["record_id"]) != (
            record.call_id,
            record.record_id,
        ):
            return None
        if document["transcript_sha256"] != record.transcript_sha256:
            return None  # made of another transcript
        return str(document["markdown"]), [str(tag) for tag in document["tags"]]
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _written(record: CallRecord, storage: Storage, markdown: str, tags: list[str]) -> dict:
    key = summary_key(
        file_id_of(record.transcript_path or ""), datetime.fromisoformat(record.started_at)
    )
    data = summary_document(record, markdown, tags).encode("utf-8")
    storage.write_bytes(key, data)
    return {
        "summary_path": key,
        "tags": json.dumps(tags, ensure_ascii=False),
        "summary_sha256": hashlib.sha256(data).hexdigest(),
        "summary_written_at": datetime.now(UTC),
    }


def summarise_record(record: CallRecord, *, chat: ChatClient, storage: Storage) -> StepOutcome:
    assert record.transcript_path
    stored = _stored_answer(record, storage)
    if stored is not None:
        label = REMADE if record.summary_path else ADOPTED
        return StepOutcome(label, _written(record, storage, *stored))
    # Only the dialogue leaves the company: the header carries the client's phone number.
    transcript = dialogue_of(storage.read_bytes(record.transcript_path).decode("utf-8"))
    meta = {
        "call_id": record.call_id,
        "started_at": record.started_at,
        "direction": record.direction,
        "duration_sec": record.duration_sec,
        "language": record.language,
    }
    summary = summarise(chat, transcript, meta)
    if record.audio_path:
        answer: dict[str, Any] = {
            "format": FORMAT,
            "call": {"call_id": record.call_id, "record_id": record.record_id},
            "transcript_sha256": record.transcript_sha256,
            "markdown": summary.markdown,
            "tags": list(summary.tags),
        }
        document = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        storage.write_bytes(_answer_key(record), gzip.compress(document, mtime=0))
    return StepOutcome("summarised", _written(record, storage, summary.markdown, summary.tags))
