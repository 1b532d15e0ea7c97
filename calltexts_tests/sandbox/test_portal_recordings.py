"""The sandbox portal's recordings and OAuth over real loopback HTTP: the storage host's
links (signed ones expire), the Drive files (disk.file.get, DOWNLOAD_URL with the caller's
credentials), WAV among the MP3s, the refresh endpoint."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from calltexts_assets.clients.bitrix24 import RecordingMissing, RecordingRefused
from calltexts_sandbox.calls.seed import generate_rows, recording_format, recording_is_stereo
from calltexts_sandbox.portal.state import PortalConfig
from calltexts_tests.sandbox.portal_support import (
    CODE,
    START,
    Served,
    as_served,
    fake_audio,
    make_client,
    midnight,
)

API = f"/rest/1/{CODE}"


def recorded(rows: list[dict[str, Any]], **where: Callable[[dict[str, Any]], bool]) -> list[dict]:
    return [r for r in rows if r["RECORD_FILE_ID"] and all(test(r) for test in where.values())]


def audio_of(row: dict[str, Any]) -> bytes:
    call_id = row["CALL_ID"]
    fmt = recording_format(call_id)
    return fake_audio(call_id, int(row["CALL_DURATION"]), recording_is_stereo(call_id), fmt)


def listed(served: Served) -> list[dict[str, Any]]:
    return make_client(served).list_calls(midnight(START), midnight(START + timedelta(days=1)))


def test_links_are_on_the_storage_host_and_drive_files_on_the_portal(
    serve: Callable[..., Served],
) -> None:
    rows = generate_rows(6, START, 1, 60)
    served = serve(rows)
    client = make_client(served)
    for row in listed(served):
        link = row["CALL_RECORD_URL"]
        if link:
            assert link.startswith(served.storage.url)  # another host than the portal's
            sink = io.BytesIO()
            client.download(link, sink)
            assert sink.getvalue() == audio_of(row)
        if row["RECORD_FILE_ID"]:
            drive = client.call("disk.file.get", {"id": row["RECORD_FILE_ID"]})["result"]
            assert drive["ID"] == str(row["RECORD_FILE_ID"]) and drive["DELETED_TYPE"] == "0"
            assert drive["NAME"].endswith(f".{recording_format(row['CALL_ID'])}")
            assert drive["DOWNLOAD_URL"].startswith(f"{served.url}{API}/download/?token=disk%7C")
            sink = io.BytesIO()
            result = client.download(drive["DOWNLOAD_URL"], sink)
            assert sink.getvalue() == audio_of(row)
            kind = "audio/wav" if recording_format(row["CALL_ID"]) == "wav" else "audio/mpeg"
            assert result.content_type == kind


def test_a_signed_link_works_until_it_expires(serve: Callable[..., Served]) -> None:
    rows = recorded(
        generate_rows(6, START, 1, 80), signed=lambda r: "signed" in (r["CALL_RECORD_URL"] or "")
    )[:1]
    served = serve(rows)
    [row] = listed(served)
    assert "&expires=" in row["CALL_RECORD_URL"] and "&token=" in row["CALL_RECORD_URL"]
    assert listed(served) == [row]  # the link is stored with the call: read again, the same
    client = make_client(served)
    assert client.download(row["CALL_RECORD_URL"], io.BytesIO()).bytes == len(audio_of(row))
    tampered = row["CALL_RECORD_URL"].replace("token=", "token=0")
    assert httpx.get(tampered).status_code == 403
    # Links that expire a second after the call: long expired now.
    old = serve(rows, config=PortalConfig(rate_per_sec=0, storage_link_ttl_sec=1.0))
    [expired] = listed(old)
    with pytest.raises(RecordingRefused) as info:
        client.download(expired["CALL_RECORD_URL"], io.BytesIO())
    assert info.value.code == "http_403"


def test_drive_errors_are_the_documented_ones(serve: Callable[..., Served]) -> None:
    served = serve(recorded(generate_rows(6, START, 1, 20))[:1])
    missing = httpx.post(f"{served.url}{API}/disk.file.get.json", data={"id": "404404"})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "ERROR_NOT_FOUND",
        "error_description": "Could not find entity with id '404404'.",
    }
    no_id = httpx.post(f"{served.url}{API}/disk.file.get.json")
    assert (no_id.status_code, no_id.json()["error"]) == (400, "ERROR_ARGUMENT")


def test_a_download_url_works_only_with_the_credentials_it_was_made_for(
    serve: Callable[..., Served],
) -> None:
    [row] = recorded(generate_rows(6, START, 1, 20))[:1]
    served = serve([row], config=PortalConfig(rate_per_sec=0, token_lifetime_sec=1.0))
    access, _ = served.portal.oauth.issue()
    drive = httpx.post(
        f"{served.url}/rest/disk.file.get.json", data={"id": row["RECORD_FILE_ID"], "auth": access}
    ).json()["result"]
    url = drive["DOWNLOAD_URL"]
    assert url.startswith(f"{served.url}/rest/download.json?auth={access}&token=disk%7C")
    assert httpx.get(url).content == audio_of(row)
    forged = url.replace(access, served.portal.oauth.issue()[0])
    assert httpx.get(forged).json()["error_description"] == "Access denied! Link check failed"
    time.sleep(1.1)  # the token behind the link has expired: so has the link
    expired = httpx.get(url)
    assert (expired.status_code, expired.json()["error"]) == (401, "expired_token")


@pytest.mark.parametrize("metered", [True, False])
def test_drive_downloads_pass_the_leaky_bucket_only_when_metered(
    serve: Callable[..., Served], metered: bool
) -> None:
    """`download_metered` (docs/specs/bitrix24_downloads.md): metered, a Drive download takes
    a place in the bucket like a REST call and is refused QUERY_LIMIT_EXCEEDED when it is
    full; not metered, downloads are served past a full bucket and leave it as it was. REST
    calls are metered either way, links on the storage host never. The clock stands still:
    the bucket never drains."""
    rows = recorded(generate_rows(6, START, 1, 60))
    drive_row = rows[0]
    link_row = next(r for r in rows if r["CALL_RECORD_URL"])
    config = PortalConfig(rate_per_sec=2.0, burst=3, download_metered=metered)
    served = serve(rows, config=config, clock=lambda: 0.0)
    assert PortalConfig().download_metered is True  # the conservative default
    with httpx.Client() as raw:
        drive = raw.post(
            f"{served.url}{API}/disk.file.get.json", data={"id": drive_row["RECORD_FILE_ID"]}
        )
        url = drive.json()["result"]["DOWNLOAD_URL"]  # 1 of 3 places taken
        downloads = [raw.get(url) for _ in range(5)]
        rest = [raw.post(f"{served.url}{API}/server.time.json").status_code for _ in range(3)]
        link = raw.get(as_served([link_row], served)[0]["CALL_RECORD_URL"])
    statuses = [d.status_code for d in downloads]
    if metered:
        assert statuses == [200, 200, 503, 503, 503]
        assert downloads[2].json()["error"] == "QUERY_LIMIT_EXCEEDED"
        assert rest == [503, 503, 503]  # the downloads filled the bucket
        assert served.portal.stats()["rate_limited"] == 6
    else:
        assert statuses == [200] * 5
        assert all(d.content == audio_of(drive_row) for d in downloads)
        assert rest == [200, 200, 503]  # the bucket holds only the REST calls
        assert served.portal.stats()["rate_limited"] == 1
    assert link.status_code == 200 and link.content == audio_of(link_row)
    assert served.portal.stats()["http_requests"]["download"] == 5


def test_recording_downloads_missing_and_truncated(serve: Callable[..., Served]) -> None:
    rows = recorded(generate_rows(6, START, 1, 40), link=lambda r: bool(r["CALL_RECORD_URL"]))[:3]
    served = serve(rows)
    client = make_client(served)
    urls = [r["CALL_RECORD_URL"] for r in listed(served)]
    gone, cut, _ = (str(r["RECORD_FILE_ID"]) for r in rows)
    portal = served.portal
    portal.add_fault(kind="missing", target="records", status=410, record_ids=[gone], times=None)
    portal.add_fault(kind="truncate", target="records", record_ids=[cut], times=2)

    with pytest.raises(RecordingMissing) as info:
        client.download(urls[0], io.BytesIO())
    assert info.value.status == 410

    expected = audio_of(rows[1])
    sink = io.BytesIO()
    result = client.download(urls[1], sink)
    assert sink.getvalue() == expected
    assert result.sha256 == hashlib.sha256(expected).hexdigest()
    assert result.bytes == len(expected)
    assert client.stats.retries == 2

    response = httpx.get(urls[2])
    assert response.headers["content-length"] == str(len(response.content))
    assert (
        httpx.get(f"{served.storage.url}/voximplant-records/x.mp3?record_id=9").status_code == 404
    )
    assert portal.request_count("records") == 6  # gone 1, cut 3, fine 1, unknown 1
    assert portal.stats()["faults_fired"] == {"missing": 1, "truncate": 2}
    assert portal.audio.renders == 2  # the truncated file was rendered once, served 3 times


def test_records_are_rendered_once_and_cached_on_disk(
    serve: Callable[..., Served], tmp_path: Any
) -> None:
    rows = recorded(generate_rows(6, START, 1, 20), link=lambda r: bool(r["CALL_RECORD_URL"]))[:1]
    renders: list[str] = []
    lock = threading.Lock()

    def counting(call_id: str, duration: int, stereo: bool, fmt: str) -> bytes:
        with lock:
            renders.append(call_id)
        return fake_audio(call_id, duration, stereo, fmt)

    config = PortalConfig(rate_per_sec=0, cache_dir=str(tmp_path))
    served = serve(rows, config=config, audio_renderer=counting)
    [row] = listed(served)
    bodies = []
    threads = [
        threading.Thread(target=lambda: bodies.append(httpx.get(row["CALL_RECORD_URL"]).content))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(bodies)) == 1 and len(renders) == 1
    assert len(list(tmp_path.glob("*.audio"))) == 1
    # A new portal on the same cache directory serves without rendering.
    second = serve(
        rows, config=PortalConfig(rate_per_sec=0, cache_dir=str(tmp_path)), audio_renderer=counting
    )
    [again] = listed(second)
    assert httpx.get(again["CALL_RECORD_URL"]).content == bodies[0]
    assert len(renders) == 1


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_default_renderer_serves_real_audio_of_the_stated_duration(
    serve: Callable[..., Served], fmt: str
) -> None:
    soundfile = pytest.importorskip("soundfile")
    rows = [
        r
        for r in recorded(generate_rows(6, START, 1, 200))
        if 5 <= int(r["CALL_DURATION"]) <= 30 and recording_format(r["CALL_ID"]) == fmt
    ][:1]
    served = serve(rows, audio_renderer=None)
    drive = make_client(served).call("disk.file.get", {"id": rows[0]["RECORD_FILE_ID"]})
    response = httpx.get(drive["result"]["DOWNLOAD_URL"], timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == ("audio/wav" if fmt == "wav" else "audio/mpeg")
    info = soundfile.info(io.BytesIO(response.content))
    assert abs(info.duration - int(rows[0]["CALL_DURATION"])) <= 1.0
    assert info.channels == (2 if recording_is_stereo(rows[0]["CALL_ID"]) else 1)
    if fmt == "wav":
        assert info.samplerate == 8000 and response.content.startswith(b"RIFF")


def test_long_recording_streams_in_chunks_into_a_callable(serve: Callable[..., Served]) -> None:
    row = {**recorded(generate_rows(6, START, 1, 10))[0], "CALL_DURATION": "1200"}
    served = serve([row])
    client = make_client(served)
    drive = client.call("disk.file.get", {"id": row["RECORD_FILE_ID"]})["result"]
    chunks: list[int] = []
    digest = hashlib.sha256()

    def sink(chunk: bytes) -> None:
        chunks.append(len(chunk))
        digest.update(chunk)

    result = client.download(drive["DOWNLOAD_URL"], sink)
    assert result.bytes == sum(chunks) == len(audio_of(row)) > 400_000
    assert len(chunks) > 1 and max(chunks) <= 128 * 1024  # never one whole-file buffer


# -- OAuth -----------------------------------------------------------------------------------


def test_an_issued_token_expires_and_the_refresh_endpoint_renews_it(
    serve: Callable[..., Served],
) -> None:
    served = serve([], config=PortalConfig(rate_per_sec=0, token_lifetime_sec=1.0))
    config = served.portal.config
    access, refresh = served.portal.oauth.issue()
    scope = f"{served.url}/rest/scope.json"
    assert httpx.get(scope, params={"auth": access}).status_code == 200
    time.sleep(1.1)
    expired = httpx.get(scope, params={"auth": access})
    assert (expired.status_code, expired.json()["error"]) == (401, "expired_token")

    query = {
        "grant_type": "refresh_token",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "refresh_token": refresh,
    }
    renewed = httpx.get(f"{served.url}/oauth/token/", params=query).json()
    assert {"access_token", "refresh_token", "expires", "expires_in", "member_id"} <= set(renewed)
    assert renewed["client_endpoint"] == f"{served.url}/rest/"
    assert httpx.get(scope, params={"auth": renewed["access_token"]}).status_code == 200
    # A refresh token is single-use; a wrong client id is answered with HTTP 200.
    again = httpx.get(f"{served.url}/oauth/token/", params=query)
    assert (again.status_code, again.json()) == (400, {"error": "invalid_grant"})
    wrong = httpx.get(f"{served.url}/oauth/token/", params={**query, "client_id": "x"})
    assert (wrong.status_code, wrong.json()) == (200, {"error": "wrong_client"})
    assert served.portal.stats()["token_refreshes"] == 1
    assert {access, refresh, renewed["access_token"]} <= served.portal.secrets()
