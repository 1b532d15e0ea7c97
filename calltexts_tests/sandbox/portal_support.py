"""What the sandbox portal's tests share: a cheap audio renderer, a served portal with its
storage host, a client pointed at it, and the rows as the portal answers them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from calltexts_assets.clients.bitrix24 import Bitrix24Client
from calltexts_sandbox.portal.files import SIGNED, STORAGE
from calltexts_sandbox.portal.state import Portal, PortalConfig
from calltexts_sandbox.server import RunningServer

MSK = ZoneInfo("Europe/Moscow")
START = date(2026, 11, 2)
CODE = PortalConfig().webhook_code
_SIGNATURE = re.compile(r"&expires=\d+&token=[0-9a-f]+$")


def fake_audio(call_id: str, duration_sec: int, stereo: bool, fmt: str) -> bytes:
    """Cheap deterministic stand-in for the tone renderer: ~400 bytes per second, with the
    first bytes of the format (the export reads the format from them)."""
    unit = hashlib.sha256(f"{call_id}{stereo}".encode()).digest()
    head = b"RIFF\0\0\0\0WAVEfmt " if fmt == "wav" else b"ID3\x04"
    return head + unit * (duration_sec * 400 // 32 + 1)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=MSK)


@dataclass
class Served:
    server: RunningServer
    storage: RunningServer
    portal: Portal

    @property
    def url(self) -> str:
        return self.server.url


def as_served(rows: list[dict[str, Any]], served: Served) -> list[dict[str, Any]]:
    """The rows as the portal answers them, a signed link's `expires`/`token` left out."""
    storage = served.storage.url

    def link(value: Any) -> Any:
        for prefix in (SIGNED, STORAGE):
            if isinstance(value, str) and value.startswith(prefix):
                return storage + value[len(prefix) :]
        return value

    return [{**r, "CALL_RECORD_URL": link(r["CALL_RECORD_URL"])} for r in rows]


def unsigned(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def link(value: str | None) -> str | None:
        return _SIGNATURE.sub("", value) if value else value

    return [{**r, "CALL_RECORD_URL": link(r["CALL_RECORD_URL"])} for r in rows]


def make_client(served: Served, **kwargs: Any) -> Bitrix24Client:
    kwargs.setdefault("requests_per_second", 0)
    kwargs.setdefault("retry_wait_scale", 0.0005)
    kwargs.setdefault("allow_private_addresses", True)  # the sandbox is on loopback
    kwargs.setdefault("recording_hosts", ["localhost"])
    return Bitrix24Client(webhook_url=f"{served.url}/rest/1/{CODE}/", **kwargs)
