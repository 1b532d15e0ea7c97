"""summaries' per-call step: transcript -> summary/call_<id>.md with tags."""

from __future__ import annotations

import json
from datetime import datetime

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.storage import Storage
from calltexts_assets.files.storage_keys import file_id_of, summary_key
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_assets.state.steps import StepOutcome
from calltexts_assets.summaries.prompt import summarise


def needs_summary(record: CallRecord) -> bool:
    # Calls in an error status have no transcript worth summarising.
    return record.status == Status.TRANSCRIBED and not record.summary_path


def dialogue_of(transcript_file: str) -> str:
    """The dialogue lines of a transcript file (after the header's blank line)."""
    _header, _blank, dialogue = transcript_file.partition("\n\n")
    return dialogue.strip()


def summary_document(record: CallRecord, markdown: str, tags: list[str]) -> str:
    tag_line = ", ".join(tags) if tags else "—"
    return f"# Звонок {record.call_id}\n\n{markdown.strip()}\n\nТеги: {tag_line}\n"


def summarise_record(record: CallRecord, *, chat: ChatClient, storage: Storage) -> StepOutcome:
    assert record.transcript_path
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
    key = summary_key(file_id_of(record.transcript_path), datetime.fromisoformat(record.started_at))
    storage.write_text(key, summary_document(record, summary.markdown, summary.tags))
    return StepOutcome(
        "summarised",
        {"summary_path": key, "tags": json.dumps(summary.tags, ensure_ascii=False)},
    )
