"""The emulated portal's recordings (docs/specs/bitrix24_wire.md §2): rendered call audio,
MP3 or WAV; the storage host that serves CALL_RECORD_URL links (another loopback host, as
Voximplant's storage gateways are), some of them signed with a token that expires; and the
Drive files behind RECORD_FILE_ID, whose DOWNLOAD_URL carries the caller's credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from calltexts_assets.core.audio_format import content_type

# (call_id, duration_sec, stereo, format) -> the recording's bytes
AudioRenderer = Callable[[str, int, bool, str], bytes]
WAV_RATE = 8_000  # telephony WAV: 8 kHz, 16-bit
STORAGE = "storage:"  # seed rows: a link on the storage host, served as it is
SIGNED = "storage+signed:"  # seed rows: a link the portal hands out with a token
_CHUNK = 64 * 1024


def default_audio_renderer(call_id: str, duration_sec: int, stereo: bool, fmt: str) -> bytes:
    """The sandbox's tone-coded call audio (imported lazily: it pulls numpy and ffmpeg)."""
    from calltexts_assets.sandbox.script import call_script
    from calltexts_assets.sandbox.tones import render_mp3, render_wav

    script = call_script(call_id, duration_sec, stereo)
    return render_wav(script, WAV_RATE) if fmt == "wav" else render_mp3(script)


class AudioCache:
    """Rendered recordings: a bounded in-memory LRU over an optional directory of files.

    Rendering costs ~0.25 s per audio minute, so each recording is rendered once (a per-key
    lock makes concurrent first downloads wait for the one render).
    """

    def __init__(
        self, renderer: AudioRenderer, cache_dir: str | None, max_bytes: int, version: str
    ) -> None:
        self.renderer = renderer
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_bytes = max_bytes
        self.version = version
        self.renders = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def get(self, call_id: str, duration_sec: int, stereo: bool, fmt: str = "mp3") -> bytes:
        key = hashlib.sha256(
            f"{self.version}|{call_id}|{duration_sec}|{int(stereo)}|{fmt}".encode()
        ).hexdigest()[:32]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            data = self._from_memory(key)
            if data is None:
                data = self._from_disk(key)
            if data is None:
                data = self.renderer(call_id, duration_sec, stereo, fmt)
                self.renders += 1
                self._to_disk(key, data)
            self._to_memory(key, data)
            return data

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

    def _from_disk(self, key: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.audio"
        return path.read_bytes() if path.exists() else None

    def _to_disk(self, key: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f"{key}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.cache_dir / f"{key}.audio")  # atomic: readers never see half a file


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


def audio_response(data: bytes, fmt: str, filename: str) -> Response:
    return StreamingResponse(
        _chunks(data),
        media_type=content_type(fmt),
        headers={
            "Content-Length": str(len(data)),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


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
