"""raw_audio's per-call step: download a recording once, keep it with its checksum."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from calltexts_assets.audio import decode as audio
from calltexts_assets.clients.bitrix24 import Bitrix24Client, RecordingMissing
from calltexts_assets.clients.storage import Storage
from calltexts_assets.core.ledger import CallRecord, Status
from calltexts_assets.core.steps import StepOutcome
from calltexts_assets.core.storage_keys import raw_audio_key

# States in which the call's audio is already stored; the download is done unless the
# stored object is gone or no longer matches its checksum.
_HAS_AUDIO = {Status.DOWNLOADED, Status.TRANSCRIBED, Status.TRANSCRIPTION_ERROR}


def audio_is_stored(record: CallRecord, storage: Storage, *, verify_checksum: bool) -> bool:
    """The stored copy is the one downloaded: same size and, unless it was modified after it
    was hashed (or `verify_checksum` asks for it), not hashed again. Re-reading every
    recording would make a no-op re-run of 60 days read gigabytes to change nothing."""
    if record.status not in _HAS_AUDIO or not record.audio_path or not record.checksum:
        return False
    stored = storage.info(record.audio_path)
    if stored is None or stored.size != record.audio_bytes:
        return False
    hashed_at = record.audio_stored_at
    if hashed_at is not None and hashed_at.tzinfo is None:
        hashed_at = hashed_at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    if verify_checksum or hashed_at is None or stored.modified_at > hashed_at:
        return storage.sha256(record.audio_path) == record.checksum
    return True


def needs_fetch(record: CallRecord, *, retry_missing: bool) -> bool:
    if record.status in (Status.NO_RECORDING, Status.INVALID) or not record.recording_url:
        return False
    return record.status != Status.MISSING_AUDIO or retry_missing


def fetch_recording(
    record: CallRecord,
    *,
    client: Bitrix24Client,
    storage: Storage,
    verify_checksum: bool,
    workdir: Path,
) -> StepOutcome:
    """Download to a local spool file (so a retry restarts cleanly and the duration is read
    from the header), then store it atomically under its layout key."""
    if audio_is_stored(record, storage, verify_checksum=verify_checksum):
        return StepOutcome("stored")
    assert record.recording_url
    key = raw_audio_key(record.call_id, datetime.fromisoformat(record.started_at))
    # A re-download of a transcribed call's lost file keeps the call's later progress.
    status = record.status if record.status in _HAS_AUDIO else Status.DOWNLOADED
    with tempfile.NamedTemporaryFile(prefix="spool-", suffix=".mp3", dir=workdir) as spool:
        try:
            downloaded = client.download(record.recording_url, spool)
        except RecordingMissing as exc:
            return StepOutcome(
                "missing",
                {"status": Status.MISSING_AUDIO, "error_code": exc.code, "error_message": str(exc)},
            )
        spool.flush()
        info = audio.probe(Path(spool.name))
        with open(spool.name, "rb") as source:
            stored = storage.write_stream(key, iter(lambda: source.read(1 << 20), b""))
    if stored.sha256 != downloaded.sha256:
        raise OSError(f"stored copy of call {record.call_id} differs from the download")
    return StepOutcome(
        "downloaded",
        {
            "status": status,
            "audio_path": key,
            "audio_bytes": stored.size,
            "checksum": stored.sha256,
            "audio_stored_at": datetime.now(UTC),
            "audio_duration_sec": info.duration_sec,
            "error_code": None,
            "error_message": None,
        },
        bytes=stored.size,
    )
