"""Retention of exported files: what is past its keep period, and its audited deletion.

Age is the object's last modification (local mtime, S3 LastModified), the same clock an S3
lifecycle rule would use. Kinds come from the storage layout (`storage_keys.key_kind`):

- raw audio                    -> `raw_days` (90): the recordings are the most sensitive data;
- transcripts and summaries    -> `transcript_days` (180): a summary is derived from the
  transcript and carries the same personal data, so it goes with it; so do the STT's and
  the chat model's answers kept beside the recording, which they are re-made from;
- period reports and QA sample -> `report_days` (180): both live under `reports/`;
- registry CSV                 -> `registry_days` (365): the accounting record of the export;
- export logs                  -> `log_days` (365): the audit trail lives as long as the registry.

A keep period of None keeps that kind forever; keys outside the layout are never touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from calltexts_assets.clients.storage import ObjectInfo, Storage
from calltexts_assets.files.storage_keys import KeyKind, key_kind


@dataclass(frozen=True)
class RetentionRules:
    raw_days: int | None = 90
    transcript_days: int | None = 180
    report_days: int | None = 180
    registry_days: int | None = 365
    log_days: int | None = 365

    def days_for(self, kind: KeyKind) -> int | None:
        return {
            "raw": self.raw_days,
            "stt_answer": self.transcript_days,
            "summary_answer": self.transcript_days,
            "transcript": self.transcript_days,
            "summary": self.transcript_days,
            "report": self.report_days,
            "qa_sample": self.report_days,
            "registry": self.registry_days,
            "log": self.log_days,
        }[kind]


@dataclass(frozen=True)
class Deletion:
    key: str
    kind: KeyKind
    age_days: int  # whole days since the last modification
    size: int = 0


@dataclass(frozen=True)
class RetentionResult:
    dry_run: bool
    deleted: list[Deletion] = field(default_factory=list)
    would_delete: list[Deletion] = field(default_factory=list)
    failed: list[tuple[Deletion, str]] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(d.size for d in self.deleted)


def plan_retention(
    objects: Iterable[ObjectInfo], now: datetime, rules: RetentionRules | None = None
) -> list[Deletion]:
    """The objects older than their kind's keep period at `now` (aware), by key."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    rules = rules or RetentionRules()
    plan: list[Deletion] = []
    for obj in objects:
        kind = key_kind(obj.key)
        days = None if kind is None else rules.days_for(kind)
        if kind is None or days is None:
            continue
        age = now - obj.modified_at
        if age > timedelta(days=days):
            plan.append(Deletion(obj.key, kind, age.days, obj.size))
    return sorted(plan, key=lambda d: d.key)


def apply_retention(
    storage: Storage, plan: Iterable[Deletion], dry_run: bool, audit_log_path: Path | str
) -> RetentionResult:
    """Delete the planned objects (or only log them in a dry run), one JSON line each.

    A failing deletion is logged and reported, and the rest go on. A plan entry whose key is
    not the layout kind it claims is refused: a hand-made plan cannot reach other files.
    """
    result = RetentionResult(dry_run=dry_run)
    audit_log = Path(audit_log_path)
    audit_log.parent.mkdir(parents=True, exist_ok=True)
    with audit_log.open("a", encoding="utf-8") as log:
        for deletion in plan:
            entry = _apply_one(storage, deletion, dry_run, result)
            log.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log.flush()  # a crash mid-sweep still leaves the lines of what was done
        os.fsync(log.fileno())
    return result


def _apply_one(
    storage: Storage, deletion: Deletion, dry_run: bool, result: RetentionResult
) -> dict[str, object]:
    """Act on one planned deletion, record it in result, and return its audit entry."""
    entry: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(),
        "action": "would_delete" if dry_run else "delete",
        "key": deletion.key,
        "kind": deletion.kind,
        "age_days": deletion.age_days,
        "size": deletion.size,
    }
    if key_kind(deletion.key) != deletion.kind:
        error = f"{deletion.key!r} is not a {deletion.kind} key of the export layout"
        result.failed.append((deletion, error))
        return entry | {"action": "refused", "error": error}
    entry["uri"] = storage.uri(deletion.key)
    if dry_run:
        result.would_delete.append(deletion)
        return entry
    try:
        storage.delete(deletion.key)
    except Exception as exc:  # one stuck object must not stop the sweep
        result.failed.append((deletion, repr(exc)))
        return entry | {"action": "delete_failed", "error": repr(exc)}
    result.deleted.append(deletion)
    return entry


def run_retention(
    storage: Storage,
    now: datetime,
    audit_log_path: Path | str,
    rules: RetentionRules | None = None,
    dry_run: bool = True,
) -> RetentionResult:
    """Plan over everything in `storage` and apply; dry run unless asked otherwise."""
    return apply_retention(
        storage, plan_retention(storage.list(), now, rules), dry_run, audit_log_path
    )
