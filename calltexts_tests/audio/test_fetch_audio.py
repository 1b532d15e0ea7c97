"""Whether a stored recording counts as downloaded: size, then a hash only when needed."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from calltexts_assets.audio.fetch import audio_is_stored
from calltexts_assets.clients.storage import LocalStorage
from calltexts_assets.state.ledger import CallRecord, Ledger
from calltexts_tests.support.records import transcribed_record

AUDIO = b"ID3" + bytes(range(256)) * 40


class CountingStorage(LocalStorage):
    hashed = 0

    def sha256(self, key: str) -> str:
        self.hashed += 1
        return super().sha256(key)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[CountingStorage, CallRecord]:
    storage = CountingStorage(tmp_path)
    record = transcribed_record(1, day="2026-11-24", call_id="c1", started_at="x", seconds=60)
    written = storage.write_bytes(record.audio_path or "", AUDIO)
    record = replace(
        record,
        audio_bytes=written.size,
        checksum=written.sha256,
        audio_stored_at=datetime.now(UTC),
    )
    return storage, record


def test_an_untouched_copy_is_trusted_without_reading_it(stored) -> None:
    storage, record = stored
    assert audio_is_stored(record, storage, verify_checksum=False)
    assert storage.hashed == 0


def test_a_copy_rewritten_after_it_was_stored_is_hashed_and_refused(stored) -> None:
    storage, record = stored
    path = storage.root / (record.audio_path or "")
    path.write_bytes(AUDIO[::-1])  # same size, other bytes, a later mtime
    later = (record.audio_stored_at or datetime.now(UTC)) + timedelta(seconds=5)
    os.utime(path, (later.timestamp(), later.timestamp()))
    assert not audio_is_stored(record, storage, verify_checksum=False)
    assert storage.hashed == 1


def test_the_audit_setting_hashes_every_copy(stored) -> None:
    storage, record = stored
    assert audio_is_stored(record, storage, verify_checksum=True)
    assert storage.hashed == 1


def test_a_row_from_before_the_stored_at_column_is_hashed(stored) -> None:
    storage, record = stored
    legacy = replace(record, audio_stored_at=None)
    assert audio_is_stored(legacy, storage, verify_checksum=False)
    assert storage.hashed == 1


def test_a_copy_of_another_size_is_not_stored(stored) -> None:
    storage, record = stored
    (storage.root / (record.audio_path or "")).write_bytes(AUDIO[:-1])
    assert not audio_is_stored(record, storage, verify_checksum=False)


def test_a_ledger_from_before_a_new_column_gains_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Ledger(url).dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE call_records DROP COLUMN audio_stored_at"))
    engine.dispose()
    ledger = Ledger(url)
    columns = {c["name"] for c in sa.inspect(ledger.engine).get_columns("call_records")}
    assert "audio_stored_at" in columns
    assert ledger.count_rows() == 0
    ledger.dispose()
