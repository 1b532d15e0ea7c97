"""Recording downloads are bounded (issue #15 item 9): only the portal and the configured
recording hosts, on public addresses, every redirect checked, a size cap and a deadline;
a refused link is the call's problem, not the run's (respx)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from calltexts_assets.clients.bitrix24 import Bitrix24Client
from calltexts_assets.clients.bitrix24.errors import (
    DownloadDeadline,
    RecordingRefused,
    RecordingTooLarge,
)
from calltexts_assets.limits.ratelimit import RateLimiter
from calltexts_assets.limits.run_errors import RunWideError
from calltexts_tests.clients.test_bitrix24_client import AUDIO, RECORD_URL, WEBHOOK

STORAGE_URL = "https://storage-gw-ru-02.voximplant.com/voximplant-records/2026/05/13/M2M3.mp3?record_id=30332316544"
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
DNS = {
    "portal.example.ru": ["93.184.215.14"],
    "storage-gw-ru-02.voximplant.com": ["185.164.148.10"],
    "evil.example.com": ["93.184.215.15"],
    "inside.voximplant.com": ["10.1.2.3"],  # an allowed name on a private address
}


def dns(host: str) -> list[str]:
    return DNS[host]


def make_client(**kwargs: object) -> Bitrix24Client:
    options: dict[str, object] = {
        "webhook_url": WEBHOOK,
        "requests_per_second": 0,
        "retry_wait_scale": 0.0001,
        "recording_hosts": [".voximplant.com"],
        "resolve": dns,
        **kwargs,
    }
    return Bitrix24Client(**options)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[Bitrix24Client]:
    c = make_client()
    yield c
    c.close()


@respx.mock
def test_a_host_that_is_not_allowed_gets_no_request(client: Bitrix24Client) -> None:
    route = respx.get("https://evil.example.com/rec.mp3").mock(return_value=httpx.Response(200))
    with pytest.raises(RecordingRefused) as info:
        client.download("https://evil.example.com/rec.mp3", io.BytesIO())
    assert info.value.code == "host_not_allowed" and not route.called
    assert "CALLTEXTS_RECORDING_HOSTS" in str(info.value)


@respx.mock
def test_the_portal_and_the_recording_hosts_are_allowed(client: Bitrix24Client) -> None:
    respx.get(STORAGE_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    portal = respx.get(RECORD_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    assert client.download(STORAGE_URL, io.BytesIO()).bytes == len(AUDIO)
    assert client.download(RECORD_URL, io.BytesIO()).bytes == len(AUDIO)
    headers = portal.calls[0].request.headers
    assert headers["user-agent"].startswith("calltexts/")
    assert headers["referer"] == "https://portal.example.ru/"


@respx.mock
def test_a_redirect_to_the_metadata_address_is_not_followed(client: Bitrix24Client) -> None:
    respx.get(RECORD_URL).mock(return_value=httpx.Response(302, headers={"Location": METADATA_URL}))
    metadata = respx.get(METADATA_URL).mock(return_value=httpx.Response(200, text="secret"))
    with pytest.raises(RecordingRefused) as info:
        client.download(RECORD_URL, io.BytesIO())
    assert not metadata.called
    assert info.value.code == "host_not_allowed"


@respx.mock
def test_a_redirect_to_an_allowed_host_is_followed(client: Bitrix24Client) -> None:
    respx.get(RECORD_URL).mock(return_value=httpx.Response(302, headers={"Location": STORAGE_URL}))
    respx.get(STORAGE_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    assert client.download(RECORD_URL, io.BytesIO()).bytes == len(AUDIO)


@pytest.mark.parametrize(
    "url",
    [
        "https://inside.voximplant.com/rec.mp3",  # the name resolves to a private address
        "http://127.0.0.1:8080/rec.mp3",
        "http://[::1]:8080/rec.mp3",
        "http://169.254.169.254/rec.mp3",
    ],
)
@respx.mock
def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    route = respx.get(url).mock(return_value=httpx.Response(200, content=AUDIO))
    allowed = ["inside.voximplant.com", "127.0.0.1", "::1", "169.254.169.254"]
    client = make_client(recording_hosts=allowed)
    with pytest.raises(RecordingRefused) as info:
        client.download(url, io.BytesIO())
    assert info.value.code == "address_not_allowed" and not route.called
    # The sandbox lives on loopback: there the same download goes through.
    sandbox = make_client(recording_hosts=allowed, allow_private_addresses=True)
    assert sandbox.download(url, io.BytesIO()).bytes == len(AUDIO)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://inside.voximplant.com/rec.mp3", True),  # 10.1.2.3, inside the PBX's network
        ("http://10.1.2.3/rec.mp3", True),
        ("http://10.9.0.1/rec.mp3", False),  # named in the hosts, outside the network
        ("http://192.168.1.5/rec.mp3", False),
        ("http://169.254.169.254/rec.mp3", False),
        ("http://127.0.0.1:8080/rec.mp3", False),
    ],
)
@respx.mock
def test_a_trusted_private_network_lets_its_pbx_through_and_nothing_else(
    url: str, allowed: bool
) -> None:
    route = respx.get(url).mock(return_value=httpx.Response(200, content=AUDIO))
    hosts = ["inside.voximplant.com", "10.1.2.3", "10.9.0.1", "192.168.1.5", "169.254.169.254",
             "127.0.0.1"]  # fmt: skip
    client = make_client(recording_hosts=hosts, recording_networks=["10.1.0.0/16"])
    if allowed:
        assert client.download(url, io.BytesIO()).bytes == len(AUDIO)
        return
    with pytest.raises(RecordingRefused) as info:
        client.download(url, io.BytesIO())
    assert info.value.code == "address_not_allowed" and not route.called
    assert "CALLTEXTS_RECORDING_NETWORKS" in str(info.value)


@respx.mock
def test_a_trusted_network_does_not_open_hosts_that_are_not_named() -> None:
    route = respx.get("http://10.1.7.7/rec.mp3").mock(return_value=httpx.Response(200))
    client = make_client(recording_networks=["10.1.0.0/16"])
    with pytest.raises(RecordingRefused) as info:
        client.download("http://10.1.7.7/rec.mp3", io.BytesIO())
    assert info.value.code == "host_not_allowed" and not route.called


class _Endless(httpx.SyncByteStream):
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self.delay:
                time.sleep(self.delay)
            self.sent += 1
            yield b"\xff" * 1024


@respx.mock
def test_a_content_length_over_the_cap_is_refused_before_the_body(client: Bitrix24Client) -> None:
    body = _Endless()
    route = respx.get(RECORD_URL).mock(
        return_value=httpx.Response(200, headers={"Content-Length": str(2 * 2**30)}, stream=body)
    )
    sink = io.BytesIO()
    with pytest.raises(RecordingTooLarge, match="over the 1024 MB cap") as info:
        client.download(RECORD_URL, sink)
    assert info.value.code == "too_large"
    assert route.call_count == 1 and body.sent == 0 and sink.getvalue() == b""


@respx.mock
def test_a_body_that_grows_past_the_cap_is_cut(client: Bitrix24Client) -> None:
    capped = make_client(max_recording_bytes=100 * 1024)
    body = _Endless()
    respx.get(RECORD_URL).mock(return_value=httpx.Response(200, stream=body))
    sink = io.BytesIO()
    with pytest.raises(RecordingTooLarge):
        capped.download(RECORD_URL, sink)
    assert len(sink.getvalue()) <= 100 * 1024 and body.sent <= 101


@respx.mock
def test_a_trickling_server_is_cut_at_the_deadline() -> None:
    """A byte every so often keeps each read under its timeout; the deadline ends it."""
    client = make_client(download_deadline_sec=0.3)
    body = _Endless(delay=0.05)
    respx.get(RECORD_URL).mock(return_value=httpx.Response(200, stream=body))
    with pytest.raises(DownloadDeadline) as info:
        client.download(RECORD_URL, io.BytesIO())
    assert info.value.code == "deadline"
    assert body.sent < 40  # 2 s worth of chunks were never waited for


@pytest.mark.parametrize("status", [401, 403])
@respx.mock
def test_a_refused_link_is_the_calls_problem_not_the_runs(
    client: Bitrix24Client, status: int
) -> None:
    route = respx.get(STORAGE_URL).mock(
        return_value=httpx.Response(status, text="<Error>AccessDenied</Error>")
    )
    with pytest.raises(RecordingRefused) as info:
        client.download(STORAGE_URL, io.BytesIO())
    assert not isinstance(info.value, RunWideError)
    assert info.value.code == f"http_{status}" and route.call_count == 1


class CountingLimiter(RateLimiter):
    """A limiter that never waits and counts the tokens taken."""

    def __init__(self) -> None:
        super().__init__(0)
        self.acquired = 0

    def acquire(self) -> float:
        self.acquired += 1
        return 0.0


DRIVE_URL = WEBHOOK + "download/?token=disk%7CaWQ9OTA0MyZfPUFCQw%3D%3D%7Csig"


@pytest.mark.parametrize(("pace", "tokens"), [(True, 2), (False, 0)])
@respx.mock
def test_drive_downloads_take_limiter_tokens_only_when_paced(pace: bool, tokens: int) -> None:
    """BITRIX24_PACE_DOWNLOADS: Drive downloads (the portal's /rest/ path) take a token each
    when on and none when off; a Voximplant link never takes one (docs/specs/
    bitrix24_downloads.md)."""
    limiter = CountingLimiter()
    client = make_client(limiter=limiter, pace_downloads=pace)
    drive = respx.get(DRIVE_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    voximplant = respx.get(STORAGE_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    try:
        for _ in range(2):
            assert client.download(DRIVE_URL, io.BytesIO()).bytes == len(AUDIO)
        assert client.download(STORAGE_URL, io.BytesIO()).bytes == len(AUDIO)
    finally:
        client.close()
    assert drive.call_count == 2 and voximplant.call_count == 1
    assert limiter.acquired == tokens
    assert client.stats.rest_downloads == 2  # counted as the portal's either way
