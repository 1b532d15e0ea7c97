"""The emulated portal's recordings (docs/specs/bitrix24_wire.md §2): rendered call audio,
MP3 or WAV; the storage host that serves CALL_RECORD_URL links (another loopback host, as
Voximplant's storage gateways are), some of them signed with a token that expires; and the
Drive files behind RECORD_FILE_ID, whose DOWNLOAD_URL carries the caller's credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from calltexts_assets.files.recording_formats import content_type

# (call_id, duration_sec, stereo, format) -> the recording, whole or in pieces (a call of
# hours is never held whole: it is rendered piece by piece into a file and served from there)
AudioRenderer = Callable[[str, int, bool, str], bytes | Iterable[bytes]]
TONES, SPEECH = "tones", "speech"  # PortalConfig.content
CONTENTS = (TONES, SPEECH)
SPEECH_CONTENT_VERSION = "1"  # bump when calls/content.py renders other audio
WAV_RATE = 8_000  # telephony WAV: 8 kHz, 16-bit
STORAGE = "storage:"  # seed rows: a link on the storage host, served as it is
SIGNED = "storage+signed:"  # seed rows: a link the portal hands out with a token
_CHUNK = 64 * 1024


def default_audio_renderer(
    call_id: str, duration_sec: int, stereo: bool, fmt: str
) -> bytes | Iterable[bytes]:
    """The sandbox's tone-coded call audio (imported lazily: it pulls numpy and ffmpeg):
    MP3 frame by frame, WAV whole."""
    from calltexts_sandbox.calls.mp3_frames import render_iter
    from calltexts_sandbox.calls.script import call_script
    from calltexts_sandbox.calls.tones import render_wav

    script = call_script(call_id, duration_sec, stereo)
    return render_wav(script, WAV_RATE) if fmt == "wav" else render_iter(script)


def speech_audio_renderer(call_id: str, duration_sec: int, stereo: bool, fmt: str) -> bytes:
    """The speech content's recordings (calls/content.py; imported lazily as above)."""
    from calltexts_sandbox.calls.content import speech_audio_renderer as render

    return render(call_id, duration_sec, stereo, fmt)


def renderer_for(content: str) -> AudioRenderer:
    if content not in CONTENTS:
        raise ValueError(f"sandbox content is one of {CONTENTS}, got {content!r}")
    return speech_audio_renderer if content == SPEECH else default_audio_renderer


class AudioCache:
    """Rendered recordings: a bounded in-memory LRU over a directory of files (the configured
    cache, else one of its own for the process).

    Each recording is rendered once (a per-key lock makes concurrent first downloads wait
    for the one render), into a file as it is produced, so a recording of hours never sits
    in memory whole; only those that fit the memory budget are also kept there.
    """

    def __init__(
        self, renderer: AudioRenderer, cache_dir: str | None, max_bytes: int, version: str
    ) -> None:
        self.renderer = renderer
        self._own_dir = None if cache_dir else tempfile.TemporaryDirectory(prefix="sandbox-audio-")
        self.cache_dir = Path(cache_dir or self._own_dir.name)  # type: ignore[union-attr]
        self.max_bytes = max_bytes
        self.version = version
        self.renders = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def _key(self, call_id: str, duration_sec: int, stereo: bool, fmt: str) -> str:
        text = f"{self.version}|{call_id}|{duration_sec}|{int(stereo)}|{fmt}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def open(self, call_id: str, duration_sec: int, stereo: bool, fmt: str = "mp3") -> bytes | Path:
        """The recording: its bytes when it fits the memory budget, else its file."""
        key = self._key(call_id, duration_sec, stereo, fmt)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            data = self._from_memory(key)
            if data is not None:
                return data
            path = self.cache_dir / f"{key}.audio"
            if not path.exists():
                self._render(path, self.renderer(call_id, duration_sec, stereo, fmt))
            if path.stat().st_size > self.max_bytes:
                return path
            data = path.read_bytes()
            self._to_memory(key, data)
            return data

    def get(self, call_id: str, duration_sec: int, stereo: bool, fmt: str = "mp3") -> bytes:
        found = self.open(call_id, duration_sec, stereo, fmt)
        return found.read_bytes() if isinstance(found, Path) else found

    def _render(self, path: Path, rendered: bytes | Iterable[bytes]) -> None:
        self.renders += 1
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        with tmp.open("wb") as out:
            for piece in [rendered] if isinstance(rendered, bytes) else rendered:
                out.write(piece)
        tmp.replace(path)  # atomic: readers never see half a file

    def _from_memory(self, key: str) -> bytes | None:
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
            return data

    def _to_memory(self, key: str, data: bytes) -> None:
        with self._lock:
            if key in self._memory or len(data) > self.max_bytes:
                return
            self._memory[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, old = self._memory.popitem(last=False)
                self._size -= len(old)


class Signer:
    """HMAC signatures of the links the portal hands out; every one is remembered, so a
    test can look for it in everything the export wrote."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.issued: set[str] = set()
        self._lock = threading.Lock()

    def sign(self, *parts: object) -> str:
        signature = hmac.new(self._secret, "|".join(map(str, parts)).encode(), "sha256")
        token = signature.hexdigest()[:40]
        with self._lock:
            self.issued.add(token)
        return token

    def valid(self, token: str, *parts: object) -> bool:
        expected = hmac.new(self._secret, "|".join(map(str, parts)).encode(), "sha256")
        return hmac.compare_digest(token, expected.hexdigest()[:40])


def storage_link(
    stored: str, record_id: str, *, storage_url: str, signer: Signer, expires: int
) -> str:
    """CALL_RECORD_URL as the portal answers it: a seed placeholder on the storage host
    (signed ones with `expires` and a `token`), any other value as given."""
    if stored.startswith(SIGNED):
        token = signer.sign("storage", record_id, expires)
        return f"{storage_url}{stored[len(SIGNED) :]}&expires={expires}&token={token}"
    if stored.startswith(STORAGE):
        return storage_url + stored[len(STORAGE) :]
    return stored


def drive_token(record_id: str, auth: str, signer: Signer) -> str:
    """The `token` of a DOWNLOAD_URL: `disk|<base64 query>|<signature>`, the signature
    covering the query and the caller's credentials (docs §2: a link made with an OAuth
    token works only while that token does)."""
    query = base64.b64encode(f"id={record_id}".encode()).decode()
    return f"disk|{query}|{signer.sign('disk', query, auth)}"


def drive_download_url(base: str, record_id: str, auth: Mapping[str, str], signer: Signer) -> str:
    """DOWNLOAD_URL in the webhook form (the code in the path) or the OAuth form."""
    if "code" in auth:
        token = drive_token(record_id, f"{auth['user']}|{auth['code']}", signer)
        return f"{base}/rest/{auth['user']}/{auth['code']}/download/?token={quote(token)}"
    token = drive_token(record_id, auth["token"], signer)
    return f"{base}/rest/download.json?auth={auth['token']}&token={quote(token)}"


def drive_record_id(token: str) -> str | None:
    parts = token.split("|")
    if len(parts) != 3 or parts[0] != "disk":
        return None
    try:
        query = base64.b64decode(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return query.removeprefix("id=") if query.startswith("id=") else None


def drive_file(
    row: Mapping[str, Any], record_id: str, *, fmt: str, size: int, download_url: str
) -> dict[str, Any]:
    """disk.file.get's answer: the docs' fields, numbers as strings, the name Bitrix24
    gives downloaded call records ("Y-m-d H-i-s <number>.<ext>")."""
    started = str(row.get("CALL_START_DATE") or "")
    name = f"{started[:10]} {started[11:19].replace(':', '-')} {row.get('PHONE_NUMBER') or ''}"
    return {
        "ID": record_id,
        "NAME": f"{name.strip()}.{fmt}",
        "CODE": None,
        "STORAGE_ID": "1",
        "TYPE": "file",
        "PARENT_ID": "17",
        "DELETED_TYPE": "0",
        "GLOBAL_CONTENT_VERSION": "1",
        "FILE_ID": str(int(record_id) + 100000),
        "SIZE": str(size),
        "CREATE_TIME": started,
        "UPDATE_TIME": started,
        "DELETE_TIME": None,
        "CREATED_BY": str(row.get("PORTAL_USER_ID") or "1"),
        "UPDATED_BY": str(row.get("PORTAL_USER_ID") or "1"),
        "DELETED_BY": "0",
        "DOWNLOAD_URL": download_url,
        "DETAIL_URL": f"{download_url.split('/rest/')[0]}/docs/file/VI_CALLS/{quote(name)}",
    }


def audio_response(found: bytes | Path, fmt: str, filename: str) -> Response:
    """The recording, from memory or streamed from its file."""
    size = found.stat().st_size if isinstance(found, Path) else len(found)
    return StreamingResponse(
        _file_chunks(found) if isinstance(found, Path) else _chunks(found),
        media_type=content_type(fmt),
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await run_in_threadpool(f.read, _CHUNK * 16):
            yield chunk


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


class DeliberateTruncation(Exception):
    """Raised mid-body to make the server drop the connection (the `truncate` fault)."""


class TruncatedBody:
    """ASGI response: announce the full length, send part of the body, drop the connection."""

    def __init__(self, data: bytes, fraction: float, fmt: str) -> None:
        self.data = data
        self.fmt = fmt
        self.cut = max(0, min(len(data) - 1, int(len(data) * fraction)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", content_type(self.fmt).encode()),
            (b"content-length", str(len(self.data)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.data[: self.cut], "more_body": True})
        raise DeliberateTruncation
