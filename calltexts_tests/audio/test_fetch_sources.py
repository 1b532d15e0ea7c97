"""Which link a recording is downloaded from, against documented Bitrix24 answers (respx):
the Drive file of a call without a link, the Drive file when the link is refused or gone,
a fresh link for one stored without its secrets, links asked for 50 commands at a time."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
import respx
import soundfile

from calltexts_assets.audio.fetch import about_to_download, fetch_recording
from calltexts_assets.audio.links import LinkPrefetcher
from calltexts_assets.clients.bitrix24 import Bitrix24AuthError, Bitrix24Client, Bitrix24Error
from calltexts_assets.clients.storage import LocalStorage
from calltexts_assets.listing.calls import call_from_row
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.support.records import listed_record

PAYLOADS = Path(__file__).resolve().parents[2] / "docs" / "specs" / "payloads" / "bitrix24"
PORTAL = "https://test.bitrix24.com"  # the host of the docs' DOWNLOAD_URL example
API = f"{PORTAL}/rest/1/webhookcode"
STORAGE = "https://storage-gw-ru-02.voximplant.com/voximplant-records/2026/03/10/abc.mp3"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def wav_bytes(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(8000 * seconds), dtype=np.int16), 8000, format="WAV")
    return buffer.getvalue()


DRIVE_FILE = payload("disk_file_get_response.json")["result"]
DOWNLOAD_URL = DRIVE_FILE["DOWNLOAD_URL"]


def documented_call(**changes: Any) -> CallRecord:
    """The docs' second statistic row: RECORD_FILE_ID 9079, no CALL_RECORD_URL."""
    row = {**payload("voximplant_statistic_get_response.json")["result"][1], **changes}
    return listed_record(call_from_row(row))


def commands_of(request: httpx.Request) -> dict[str, str]:
    form = parse_qsl(request.content.decode(), keep_blank_values=True)
    return {k[4:-1]: v for k, v in form if k.startswith("cmd[")}


class DrivePortal:
    """`batch` answering disk.file.get with the docs' file and statistic.get with `rows`."""

    def __init__(self, rows: dict[str, dict[str, Any]] | None = None, error: Any = None) -> None:
        self.rows = rows or {}
        self.error = error  # a result_error entry for every disk.file.get
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        commands = commands_of(request)
        self.requests.append(commands)
        result: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for name, command in commands.items():
            method, _, query = command.partition("?")
            params = dict(parse_qsl(query))
            if method == "disk.file.get":
                if self.error is not None:
                    errors[name] = self.error
                else:
                    result[name] = {**DRIVE_FILE, "ID": params["id"]}
            else:
                row = self.rows.get(params["FILTER[ID]"])
                result[name] = [row] if row else []
        return httpx.Response(
            200, json={"result": {"result": result, "result_error": errors or []}}
        )


@pytest.fixture
def client() -> Iterator[Bitrix24Client]:
    c = Bitrix24Client(
        webhook_url=f"{API}/",
        requests_per_second=0,
        retry_wait_scale=0.0001,
        recording_hosts=[".voximplant.com"],
        resolve=lambda host: ["93.184.215.14"],
    )
    yield c
    c.close()


def fetch(
    record: CallRecord, client: Bitrix24Client, tmp_path: Path, links: LinkPrefetcher | None = None
):
    prefetcher = links or LinkPrefetcher(client)
    list(prefetcher.ahead([record], about_to_download))
    return fetch_recording(
        record,
        client=client,
        links=prefetcher,
        storage=LocalStorage(tmp_path / "store"),
        verify_checksum=False,
        workdir=tmp_path,
    )


@respx.mock
def test_a_call_with_only_a_drive_file_is_downloaded_from_drive(
    client: Bitrix24Client, tmp_path: Path
) -> None:
    portal = DrivePortal()
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    audio = respx.get(DOWNLOAD_URL).mock(return_value=httpx.Response(200, content=wav_bytes()))
    outcome = fetch(documented_call(), client, tmp_path)
    assert outcome.label == "downloaded"
    assert outcome.updates["recording_source"] == "drive"
    assert outcome.updates["audio_path"].endswith(".wav")  # the bytes say WAV
    assert outcome.updates["audio_duration_sec"] == pytest.approx(1.0)
    assert portal.requests == [{"f0": "disk.file.get?id=9079"}]
    assert audio.call_count == 1
    assert "auth=" not in json.dumps(outcome.updates, default=str)  # the link is never kept


@pytest.mark.parametrize("status", [403, 404])
@respx.mock
def test_a_refused_or_gone_link_falls_back_to_the_drive_file(
    client: Bitrix24Client, tmp_path: Path, status: int
) -> None:
    respx.post(f"{API}/batch.json").mock(side_effect=DrivePortal())
    link = respx.get(STORAGE).mock(return_value=httpx.Response(status))
    respx.get(DOWNLOAD_URL).mock(return_value=httpx.Response(200, content=wav_bytes()))
    outcome = fetch(documented_call(CALL_RECORD_URL=STORAGE), client, tmp_path)
    assert outcome.updates["recording_source"] == "drive"
    assert link.call_count == 1  # a plain link has no fresher version: straight to Drive


@respx.mock
def test_a_working_link_is_used_first(client: Bitrix24Client, tmp_path: Path) -> None:
    respx.post(f"{API}/batch.json").mock(side_effect=DrivePortal())
    respx.get(STORAGE).mock(return_value=httpx.Response(200, content=wav_bytes()))
    drive = respx.get(DOWNLOAD_URL).mock(return_value=httpx.Response(200, content=wav_bytes()))
    outcome = fetch(documented_call(CALL_RECORD_URL=STORAGE), client, tmp_path)
    assert outcome.updates["recording_source"] == "link" and not drive.called


@respx.mock
def test_a_link_stored_without_its_token_is_read_again_from_the_row(
    client: Bitrix24Client, tmp_path: Path
) -> None:
    signed = f"{STORAGE}?record_id=5&token=t-fresh"
    portal = DrivePortal(rows={"7": {"ID": "7", "CALL_RECORD_URL": signed}})
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    link = respx.get(signed).mock(return_value=httpx.Response(200, content=wav_bytes()))
    record = documented_call(CALL_RECORD_URL=f"{STORAGE}?record_id=5&token=t-listed")
    assert record.recording_url == f"{STORAGE}?record_id=5" and record.recording_url_signed
    outcome = fetch(record, client, tmp_path)
    assert outcome.updates["recording_source"] == "link" and link.called
    assert portal.requests[0]["s0"].startswith("voximplant.statistic.get?FILTER%5BID%5D=7")


@respx.mock
def test_a_refused_drive_link_gets_one_fresh_link(client: Bitrix24Client, tmp_path: Path) -> None:
    portal = DrivePortal()
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    respx.get(DOWNLOAD_URL).mock(
        side_effect=[
            httpx.Response(401, json=payload("error_expired_token.json")),
            httpx.Response(200, content=wav_bytes()),
        ]
    )
    outcome = fetch(documented_call(), client, tmp_path)
    assert outcome.updates["recording_source"] == "drive"
    assert len(portal.requests) == 2  # the group's batch, then one for the fresh link


@respx.mock
def test_a_drive_file_gone_and_no_link_is_missing_audio(client: Bitrix24Client, tmp_path: Path):
    respx.post(f"{API}/batch.json").mock(
        side_effect=DrivePortal(error=payload("error_disk_not_found.json"))
    )
    respx.get(STORAGE).mock(return_value=httpx.Response(404))
    outcome = fetch(documented_call(CALL_RECORD_URL=STORAGE), client, tmp_path)
    assert outcome.label == "missing"
    assert outcome.updates["status"] == Status.MISSING_AUDIO
    assert outcome.updates["error_code"] == "http_404"
    assert "ERROR_NOT_FOUND" in outcome.updates["error_message"]


@respx.mock
def test_a_drive_file_the_user_may_not_read_is_a_download_error(
    client: Bitrix24Client, tmp_path: Path
) -> None:
    respx.post(f"{API}/batch.json").mock(
        side_effect=DrivePortal(error=payload("error_access_denied_generic.json"))
    )
    with pytest.raises(Bitrix24Error, match="administrator's webhook") as info:
        fetch(documented_call(), client, tmp_path)
    assert info.value.code == "drive_access_denied"
    assert not isinstance(info.value, Bitrix24AuthError)  # the call's problem, not the run's


@respx.mock
def test_links_of_many_calls_take_one_request_per_50_commands(
    client: Bitrix24Client, tmp_path: Path
) -> None:
    portal = DrivePortal()
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    base = documented_call()
    records = [replace(base, call_id=f"c{n}", record_id=str(9000 + n)) for n in range(120)]
    prefetcher = LinkPrefetcher(client)
    assert [r.call_id for r in prefetcher.ahead(records, about_to_download)] == [
        r.call_id for r in records
    ]
    assert [len(r) for r in portal.requests] == [49, 49, 22]
    assert prefetcher.take(records[0]).drive_url == DOWNLOAD_URL
    # Calls with a stored copy are not resolved ahead.
    stored = [replace(r, status=Status.TRANSCRIBED) for r in records[:3]]
    list(prefetcher.ahead(stored, about_to_download))
    assert len(portal.requests) == 3


@respx.mock
def test_a_missing_disk_scope_stops_with_the_scope_named(client: Bitrix24Client) -> None:
    denied = {"error": "insufficient_scope", "error_description": ""}
    respx.post(f"{API}/batch.json").mock(side_effect=DrivePortal(error=denied))
    with pytest.raises(Bitrix24AuthError, match="lacks the `disk` scope"):
        list(LinkPrefetcher(client).ahead([documented_call()], about_to_download))
