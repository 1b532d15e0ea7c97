"""raw_audio's per-call step: download a recording once, keep it with its checksum, under
the extension of its real format.

A recording has up to two sources (docs/specs/bitrix24_wire.md §2): the row's link
(CALL_RECORD_URL, often a Voximplant storage gateway or a PBX's host) and its Bitrix24
Drive file (RECORD_FILE_ID, through disk.file.get). The link goes first; the Drive file is
the fallback when the link is refused (401/403, a host not allowed) or gone (404/410), and
the only source of recordings an external phone system attached. A refused link is tried
once more with a fresh one; what still fails is this call's download error, never the run's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.links import LinkPrefetcher
from calltexts_assets.clients.bitrix24 import (
    Bitrix24Client,
    Bitrix24Error,
    DownloadResult,
    Links,
    RecordingMissing,
    RecordingRefused,
)
from calltexts_assets.clients.storage import Storage
from calltexts_assets.files.recording_formats import SNIFF_BYTES, sniff_format
from calltexts_assets.files.storage_keys import key_kind, raw_audio_key, recording_file_id
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_assets.state.steps import StepOutcome

# States in which the call's audio is already stored; the download is done unless the
# stored object is gone or no longer matches its checksum.
_HAS_AUDIO = {Status.DOWNLOADED, Status.TRANSCRIBED, Status.TRANSCRIPTION_ERROR}
LINK, DRIVE = "link", "drive"  # the ledger's recording_source
_DRIVE_DENIED = (
    "the webhook's or application's user may not read this recording on Bitrix24 Drive "
    "(the call recordings folder is open to administrators and to the call's own operator): "
    "use an administrator's webhook"
)


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


def already_stored(
    record: CallRecord, *, storage: Storage, verify_checksum: bool
) -> StepOutcome | None:
    """The outcome `stored` for a call whose recording is stored intact (looked at before the
    call is claimed: a no-op re-run then writes nothing per call), else None."""
    if audio_is_stored(record, storage, verify_checksum=verify_checksum):
        return StepOutcome("stored")
    return None


def adopted_recording(
    record: CallRecord, storage: Storage, file_id: str, started: datetime
) -> StepOutcome | None:
    """A recording stored under the call's name while the ledger has no copy of it (the
    ledger was lost, or restored from an older backup): adopted with its sha256 when it
    reads as audio, at no download. Whether the STT's stored answer belongs to it is then
    judged by that sha256 (`transcripts/answers.py`)."""
    if record.status in _HAS_AUDIO:
        return None
    stem = raw_audio_key(file_id, started).rpartition(".")[0]
    for found in storage.list(f"{stem}."):
        if key_kind(found.key) != "raw":
            continue
        with storage.local_path(found.key) as path:
            try:
                info = audio.probe(path)
            except audio.AudioError:
                return None  # not a recording we stored: fetched again
        return StepOutcome(
            "adopted",
            {
                "status": Status.DOWNLOADED,
                "audio_path": found.key,
                "audio_bytes": found.size,
                "checksum": storage.sha256(found.key),
                "audio_stored_at": datetime.now(UTC),
                "audio_duration_sec": info.duration_sec,
                "recording_source": _only_source(record),
                "error_code": None,
                "error_message": None,
            },
        )
    return None


def _only_source(record: CallRecord) -> str | None:
    """Where an adopted copy came from, when the row offers one source only; a row with a
    link and a Drive file could have been fetched from either (the Drive file when the link
    was refused): unknown, left empty rather than guessed."""
    if record.recording_url and not record.record_id:
        return LINK
    if record.record_id and not record.recording_url:
        return DRIVE
    return None


def needs_fetch(record: CallRecord, *, retry_missing: bool) -> bool:
    if record.status in (Status.NO_RECORDING, Status.INVALID):
        return False
    if not record.has_recording:
        return False
    return record.status != Status.MISSING_AUDIO or retry_missing


def about_to_download(record: CallRecord) -> bool:
    """Whether the call's links are worth resolving ahead: it has no stored copy yet (a
    stored copy found lost later gets its links alone)."""
    return record.status not in _HAS_AUDIO


@dataclass
class _Tried:
    """What the sources of one call answered, for the outcome when none worked."""

    refused: Bitrix24Error | None = None
    missing: RecordingMissing | None = None
    drive_gone: str = ""

    def outcome(self, record: CallRecord, links: Links) -> StepOutcome:
        if self.refused is not None:
            raise self.refused
        if self.missing is not None or self.drive_gone:
            code = self.missing.code if self.missing else "drive_not_found"
            message = str(self.missing) if self.missing else self.drive_gone
            if self.missing and self.drive_gone:
                message = f"{message}; Drive: {self.drive_gone}"
            return StepOutcome(
                "missing",
                {"status": Status.MISSING_AUDIO, "error_code": code, "error_message": message},
            )
        raise Bitrix24Error(
            f"no working link to the recording of call {record.call_id}: "
            f"{links.failure or 'Bitrix24 gave none'}",
            method="download",
            code="no_link",
        )


def _link_of(source: str, record: CallRecord, links: Links) -> str | None:
    if source == DRIVE:
        return links.drive_url
    if record.recording_url_signed:  # the ledger's copy lost its secrets: the row's, now
        return links.record_url
    return record.recording_url


def _download_from_sources(
    record: CallRecord, client: Bitrix24Client, prefetched: LinkPrefetcher, spool: IO[bytes]
) -> tuple[str, DownloadResult] | StepOutcome:
    """(source, download) from the first source that works, else the call's outcome."""
    links = prefetched.take(record)
    tried = _Tried()
    for source in (LINK, DRIVE):
        renewable = source == DRIVE or bool(record.recording_url_signed)
        for attempt in ("as resolved", "fresh"):
            url = _link_of(source, record, links)
            if source == DRIVE and url is None:
                if links.drive_gone:
                    tried.drive_gone = f"{links.drive_error}: {links.drive_message}"
                elif links.drive_error == "ACCESS_DENIED":
                    tried.refused = Bitrix24Error(
                        f"{_DRIVE_DENIED} (disk.file.get {record.record_id}: "
                        f"{links.drive_error}: {links.drive_message})",
                        method="disk.file.get",
                        code="drive_access_denied",
                    )
                break
            if url is None:
                break
            spool.seek(0)
            spool.truncate()
            try:
                return source, client.download(url, spool)
            except RecordingRefused as exc:
                tried.refused = exc
                if attempt == "fresh" or not renewable:
                    break
                links = prefetched.renew(record)
            except RecordingMissing as exc:
                tried.missing = exc
                break
    return tried.outcome(record, links)


def fetch_recording(
    record: CallRecord,
    *,
    client: Bitrix24Client,
    links: LinkPrefetcher,
    storage: Storage,
    verify_checksum: bool,
    workdir: Path,
    several_recordings: Container[str] = frozenset(),
) -> StepOutcome:
    """Download to a local spool file (so a retry restarts cleanly and the format and the
    duration are read from the file), then store it atomically under its layout key: the
    call id, or its own name for each recording of a call in `several_recordings`."""
    if audio_is_stored(record, storage, verify_checksum=verify_checksum):
        return StepOutcome("stored")
    started = datetime.fromisoformat(record.started_at)
    several = record.call_id in several_recordings
    file_id = recording_file_id(record.call_id, record.record_id, several=several)
    adopted = adopted_recording(record, storage, file_id, started)
    if adopted is not None:
        return adopted
    # A re-download of a transcribed call's lost file keeps the call's later progress.
    status = record.status if record.status in _HAS_AUDIO else Status.DOWNLOADED
    with tempfile.NamedTemporaryFile(prefix="spool-", suffix=".part", dir=workdir) as spool:
        found = _download_from_sources(record, client, links, spool)
        if isinstance(found, StepOutcome):
            return found
        source, downloaded = found
        spool.flush()
        with open(spool.name, "rb") as head:
            extension = sniff_format(head.read(SNIFF_BYTES))
        if extension is None:
            raise audio.AudioError(
                f"not a readable audio file: call {record.call_id}'s recording starts with "
                "neither an MP3, WAV, FLAC, Ogg nor MP4 header"
            )
        info = audio.probe(Path(spool.name))
        key = raw_audio_key(file_id, started, extension)
        with open(spool.name, "rb") as source_file:
            stored = storage.write_stream(key, iter(lambda: source_file.read(1 << 20), b""))
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
            "recording_source": source,
            "error_code": None,
            "error_message": None,
        },
        bytes=stored.size,
    )
