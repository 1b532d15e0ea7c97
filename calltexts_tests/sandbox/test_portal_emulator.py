"""The sandbox portal over real loopback HTTP, driven by the production Bitrix24 client."""

from __future__ import annotations

import hashlib
import io
import statistics
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from starlette.applications import Starlette

from calltexts_assets.clients.bitrix24 import (
    Bitrix24AuthError,
    Bitrix24Client,
    Bitrix24Error,
    RecordingMissing,
)
from calltexts_assets.sandbox.portal import Fault, Portal, PortalConfig, create_portal_app
from calltexts_assets.sandbox.seed import (
    SeedSpec,
    day_counts,
    expected_day_counts,
    generate_rows,
    recording_is_stereo,
)
from calltexts_assets.sandbox.server import RunningServer, serve_in_thread

MSK = ZoneInfo("Europe/Moscow")
START = date(2026, 11, 2)
CODE = PortalConfig().webhook_code


def fake_mp3(call_id: str, duration_sec: int, stereo: bool) -> bytes:
    """Cheap deterministic stand-in for the tone renderer: ~400 bytes per second."""
    unit = hashlib.sha256(f"{call_id}{stereo}".encode()).digest()
    return b"ID3\x04" + unit * (duration_sec * 400 // 32 + 1)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=MSK)


def as_served(rows: list[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    return [
        {**r, "CALL_RECORD_URL": base_url + r["CALL_RECORD_URL"] if r["CALL_RECORD_URL"] else ""}
        for r in rows
    ]


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[RunningServer, Portal]]]:
    servers: list[RunningServer] = []

    def start(
        rows: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> tuple[RunningServer, Portal]:
        kwargs.setdefault("audio_renderer", fake_mp3)
        kwargs.setdefault("config", PortalConfig(rate_per_sec=0))
        app: Starlette = create_portal_app(rows, **kwargs)
        server = serve_in_thread(app)
        servers.append(server)
        return server, app.state.portal

    yield start
    for server in servers:
        server.stop()


def make_client(server: RunningServer, **kwargs: Any) -> Bitrix24Client:
    kwargs.setdefault("requests_per_second", 0)
    kwargs.setdefault("retry_wait_scale", 0.0005)
    kwargs.setdefault("allow_private_addresses", True)  # the sandbox is on loopback
    return Bitrix24Client(webhook_url=f"{server.url}/rest/1/{CODE}/", **kwargs)


# -- seed ------------------------------------------------------------------------------------


def test_seed_is_deterministic_and_day_stable() -> None:
    rows = generate_rows(7, START, 3, 40)
    assert rows == generate_rows(7, START, 3, 40)
    assert rows != generate_rows(8, START, 3, 40)
    # A day's calls do not depend on the range that was seeded.
    assert generate_rows(7, START + timedelta(days=1), 1, 40) == rows[40:80]
    ids = [int(r["ID"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len({r["CALL_ID"] for r in rows}) == len(rows)
    assert expected_day_counts(7, START, 3, 40) == {START + timedelta(days=i): 40 for i in range(3)}


def test_seed_rows_look_like_the_portal() -> None:
    rows = generate_rows(1, START, 5, 400)
    answered = [r for r in rows if r["CALL_FAILED_CODE"] == "200"]
    missed = [r for r in rows if r["CALL_FAILED_CODE"] == "304"]
    assert 0.03 < len(missed) / len(rows) < 0.15
    assert all(r["CALL_DURATION"] == "0" and not r["CALL_RECORD_URL"] for r in missed)
    assert all(r["RECORD_FILE_ID"] is None for r in missed)
    durations = [int(r["CALL_DURATION"]) for r in answered]
    assert 35 <= statistics.median(durations) <= 55
    assert max(durations) <= 1200 and min(durations) >= 1
    assert sum(d > 300 for d in durations) > 0  # a long tail
    for row in rows:
        started = datetime.fromisoformat(row["CALL_START_DATE"])
        assert started.utcoffset() == timedelta(hours=3)
        assert 9 <= started.hour < 19
        assert row["CALL_ID"].startswith("sbx.")
        assert row["CALL_TYPE"] in {"1", "2", "3", "4"}
        assert row["PHONE_NUMBER"].startswith("+79") and len(row["PHONE_NUMBER"]) == 12
        assert row["COST_CURRENCY"] == "RUB"
    for row in answered:
        assert row["CALL_RECORD_URL"] == f"/sandbox/records/{row['RECORD_FILE_ID']}.mp3"
    stereo = [recording_is_stereo(r["CALL_ID"]) for r in answered]
    assert 0.75 < sum(stereo) / len(stereo) < 0.95  # most stereo, some mono


def test_seed_in_another_zone_stays_in_its_working_day() -> None:
    rows = generate_rows(3, START, 2, 50, tz="Asia/Vladivostok")
    assert day_counts(rows, "Asia/Vladivostok") == {START: 50, START + timedelta(days=1): 50}
    assert all(r["CALL_START_DATE"].endswith("+10:00") for r in rows)


# -- listing ---------------------------------------------------------------------------------


def test_list_calls_three_days_at_150_a_day(serve: Callable[..., Any]) -> None:
    rows = generate_rows(11, START, 3, 150)
    # Neighbouring days that must not leak into the range.
    extra = generate_rows(11, START - timedelta(days=1), 1, 5) + generate_rows(
        11, START + timedelta(days=3), 1, 5
    )
    server, portal = serve(extra[:5] + rows + extra[5:])
    client = make_client(server)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=3)))
    assert got == as_served(rows, server.url)
    assert day_counts(got) == expected_day_counts(11, START, 3, 150)
    assert portal.stats()["http_requests"] == {"batch": 1}


def test_list_calls_one_day_of_2600_calls_at_2_requests_a_second(
    serve: Callable[..., Any],
) -> None:
    rows = generate_rows(5, START, 1, 2600)
    server, portal = serve(rows, config=PortalConfig(rate_per_sec=2.0, burst=2))
    client = make_client(server, requests_per_second=2.0)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    assert got == as_served(rows, server.url)
    stats = portal.stats()
    assert stats["http_requests"] == {"batch": 2}
    assert stats["rate_limited"] == 0
    assert portal.request_count("voximplant.statistic.get") == 100  # 2 batches x 50 pages


def test_the_client_limiter_keeps_the_portal_limit_at_zero(serve: Callable[..., Any]) -> None:
    server, portal = serve([], config=PortalConfig(rate_per_sec=2.0, burst=2))
    # Control: unpaced requests do run into the portal's leaky bucket.
    with httpx.Client() as raw:
        statuses = [
            raw.post(f"{server.url}/rest/1/{CODE}/scope.json").status_code for _ in range(6)
        ]
    assert statuses.count(503) >= 3
    portal.reset_stats()
    portal.set_rate_limit(2.0, burst=2)  # empty bucket again
    client = make_client(server, requests_per_second=2.0)
    for _ in range(6):
        client.call("scope")
    stats = portal.stats()
    assert stats["rate_limited"] == 0 and stats["responses"] == {"200": 6}
    assert client.stats.limit_hits == 0 and client.stats.retries == 0


def test_filters_sort_and_offset_paging(serve: Callable[..., Any]) -> None:
    rows = generate_rows(2, START, 1, 120)
    server, _ = serve(rows)
    client = make_client(server)
    # Instants compare across offsets: 09:00+03:00 is 06:00Z.
    since = {">=CALL_START_DATE": f"{START}T06:00:00Z", "<=CALL_START_DATE": f"{START}T07:00:00Z"}
    in_hour = [
        r
        for r in rows
        if midnight(START) + timedelta(hours=9)
        <= datetime.fromisoformat(r["CALL_START_DATE"])
        <= midnight(START) + timedelta(hours=10)
    ]
    first = client.call("voximplant.statistic.get", {"FILTER": since, "SORT": "ID", "ORDER": "ASC"})
    assert [r["ID"] for r in first["result"]] == [r["ID"] for r in in_hour][:50]
    assert first["total"] == len(in_hour)

    page0 = client.call("voximplant.statistic.get", {"SORT": "ID", "ORDER": "DESC", "start": 0})
    page2 = client.call("voximplant.statistic.get", {"SORT": "ID", "ORDER": "DESC", "start": 100})
    assert [r["ID"] for r in page0["result"]] == [r["ID"] for r in reversed(rows)][:50]
    assert (page0["next"], page0["total"]) == (50, 120)
    assert len(page2["result"]) == 20 and "next" not in page2
    for row in page0["result"]:
        expected_url = f"{server.url}/sandbox/records/{row['RECORD_FILE_ID']}.mp3"
        assert row["CALL_RECORD_URL"] == (expected_url if row["RECORD_FILE_ID"] else "")

    keyset = client.call(
        "voximplant.statistic.get",
        {"FILTER": {">=ID": rows[10]["ID"]}, "SORT": "ID", "ORDER": "ASC", "start": -1},
    )
    assert [r["ID"] for r in keyset["result"]] == [r["ID"] for r in rows[10:60]]
    assert "total" not in keyset and "next" not in keyset

    default = client.call("voximplant.statistic.get", {"start": -1})
    assert default["result"][0]["ID"] == rows[-1]["ID"]  # newest first unless SORT says otherwise


def test_batch_references_halt_and_length(serve: Callable[..., Any]) -> None:
    rows = generate_rows(4, START, 1, 60)
    server, portal = serve(rows)
    client = make_client(server)
    first = "voximplant.statistic.get?SORT=ID&ORDER=ASC&start=-1"
    answer = client.batch(
        {
            "a": first,
            "b": "voximplant.statistic.get?FILTER[ID]=$result[a][3][ID]&start=-1",
            "c": "voximplant.statistic.get?FILTER[>ID]=$result[a][99][ID]&start=-1",
            "d": "scope",
        }
    )
    assert [r["ID"] for r in answer.result["b"]] == [rows[3]["ID"]]
    assert answer.result_error["c"]["error"] == "ERROR_BATCH_REFERENCE"
    assert answer.result["d"] == ["telephony", "call"]
    halted = client.batch({"x": "no.such.method", "y": "scope"}, halt=True)
    assert "x" in halted.result_error and "y" not in halted.result
    assert portal.stats()["requests"]["batch"] == 2
    assert portal.request_count("voximplant.statistic.get") == 3  # commands inside batches

    too_many = {f"cmd[c{i}]": "scope" for i in range(51)}
    response = httpx.post(f"{server.url}/rest/1/{CODE}/batch.json", data=too_many)
    assert response.status_code == 400
    assert response.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


def test_get_query_and_json_bodies_and_oauth(serve: Callable[..., Any]) -> None:
    rows = generate_rows(4, START, 1, 5)
    server, _ = serve(rows)
    url = f"{server.url}/rest/1/{CODE}/voximplant.statistic.get.json"
    by_get = httpx.get(url, params={"FILTER[>ID]": rows[2]["ID"], "SORT": "ID", "ORDER": "ASC"})
    by_json = httpx.post(url, json={"FILTER": {">ID": rows[2]["ID"]}, "SORT": "ID", "ORDER": "ASC"})
    assert [r["ID"] for r in by_get.json()["result"]] == [r["ID"] for r in rows[3:]]
    assert by_json.json()["result"] == by_get.json()["result"]
    token = PortalConfig().oauth_tokens[0]
    oauth = httpx.get(f"{server.url}/rest/scope.json", params={"auth": token})
    assert oauth.json()["result"] == ["telephony", "call"]
    wrong = httpx.get(f"{server.url}/rest/scope.json", params={"auth": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"


def test_wrong_webhook_code_is_an_auth_error(serve: Callable[..., Any]) -> None:
    server, _ = serve([])
    client = Bitrix24Client(webhook_url=f"{server.url}/rest/1/wrongcode/", requests_per_second=0)
    with pytest.raises(Bitrix24AuthError, match="invalid credentials") as info:
        client.call("scope")
    assert "wrongcode" not in str(info.value)


# -- faults ----------------------------------------------------------------------------------


def test_503_burst_is_absorbed_by_retries(serve: Callable[..., Any]) -> None:
    rows = generate_rows(9, START, 1, 120)
    server, portal = serve(rows, faults=[Fault("status", "voximplant.statistic.get", times=3)])
    client = make_client(server)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    assert got == as_served(rows, server.url)
    assert (client.stats.retries, client.stats.limit_hits) == (3, 3)
    stats = portal.stats()
    assert stats["faults_fired"] == {"status": 3}
    assert stats["responses"] == {"200": 1, "503": 3}
    assert portal.faults == []  # spent faults are gone


def test_faults_through_the_admin_endpoint(serve: Callable[..., Any]) -> None:
    server, portal = serve([])
    client = make_client(server)
    faults = [
        {"kind": "status", "target": "scope", "status": 500, "times": 1},
        {"kind": "status", "target": "scope", "status": 429, "retry_after": 2, "times": 1},
        {"kind": "html", "target": "scope", "status": 502, "times": 1},
    ]
    answer = httpx.post(f"{server.url}/_sandbox/faults", json={"faults": faults}).json()
    assert [f["status"] for f in answer["faults"]] == [500, 429, 502]
    assert client.call("scope")["result"] == ["telephony", "call"]
    assert client.stats.retries == 3 and client.stats.limit_hits == 1

    httpx.post(f"{server.url}/_sandbox/faults", json={"kind": "expired_token", "times": None})
    for _ in range(2):  # until cleared
        with pytest.raises(Bitrix24AuthError, match="access token expired"):
            client.call("scope")
    assert httpx.delete(f"{server.url}/_sandbox/faults").json() == {"faults": []}
    assert client.call("scope")["result"]

    bad = httpx.post(f"{server.url}/_sandbox/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.text
    assert portal.request_count("scope") == 7


def test_html_200_is_not_retried(serve: Callable[..., Any]) -> None:
    server, portal = serve([])
    portal.add_fault(kind="html", target="*", status=200)
    with pytest.raises(Bitrix24Error, match=r"HTML instead of JSON \(status 200\)"):
        make_client(server).call("scope")
    assert portal.request_count("scope") == 1


def test_latency_beyond_the_client_timeout_is_retried(serve: Callable[..., Any]) -> None:
    server, portal = serve([])
    portal.add_fault(kind="latency", target="scope", delay_sec=0.6)
    client = make_client(server, timeout_sec=0.2)
    assert client.call("scope")["result"]
    assert client.stats.retries == 1 and portal.request_count("scope") == 2


def test_recording_downloads_missing_and_truncated(serve: Callable[..., Any]) -> None:
    rows = [r for r in generate_rows(6, START, 1, 40) if r["RECORD_FILE_ID"]][:3]
    server, portal = serve(rows)
    client = make_client(server)
    listed = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    urls = [r["CALL_RECORD_URL"] for r in listed]
    gone, cut, fine = (r["RECORD_FILE_ID"] for r in rows)
    portal.add_fault(kind="missing", target="records", status=410, record_ids=[gone], times=None)
    portal.add_fault(kind="truncate", target="records", record_ids=[cut], times=2)

    with pytest.raises(RecordingMissing) as info:
        client.download(urls[0], io.BytesIO())
    assert info.value.status == 410

    expected = fake_mp3(
        rows[1]["CALL_ID"], int(rows[1]["CALL_DURATION"]), recording_is_stereo(rows[1]["CALL_ID"])
    )
    sink = io.BytesIO()
    result = client.download(urls[1], sink)
    assert sink.getvalue() == expected
    assert result.sha256 == hashlib.sha256(expected).hexdigest()
    assert result.bytes == len(expected) and result.content_type == "audio/mpeg"
    assert client.stats.retries == 2

    response = httpx.get(urls[2])
    assert response.headers["content-length"] == str(len(response.content))
    assert response.content.startswith(b"ID3")
    assert httpx.get(f"{server.url}/sandbox/records/999.mp3").status_code == 404
    assert portal.request_count("records") == 6  # gone 1, cut 3, fine 1, unknown 1
    assert portal.stats()["faults_fired"] == {"missing": 1, "truncate": 2}
    assert portal.audio.renders == 2  # the truncated file was rendered once, served 3 times
    assert urls[2].endswith(f"/sandbox/records/{fine}.mp3")


def test_records_are_rendered_once_and_cached_on_disk(
    serve: Callable[..., Any], tmp_path: Any
) -> None:
    rows = [r for r in generate_rows(6, START, 1, 20) if r["RECORD_FILE_ID"]][:1]
    renders: list[str] = []
    lock = threading.Lock()

    def counting(call_id: str, duration: int, stereo: bool) -> bytes:
        with lock:
            renders.append(call_id)
        return fake_mp3(call_id, duration, stereo)

    config = PortalConfig(rate_per_sec=0, cache_dir=str(tmp_path))
    server, _ = serve(rows, config=config, audio_renderer=counting)
    url = f"{server.url}{rows[0]['CALL_RECORD_URL']}"
    bodies = []
    threads = [
        threading.Thread(target=lambda: bodies.append(httpx.get(url).content)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(bodies)) == 1 and len(renders) == 1
    assert len(list(tmp_path.glob("*.mp3"))) == 1
    # A new portal on the same cache directory serves without rendering.
    server2, _ = serve(
        rows, config=PortalConfig(rate_per_sec=0, cache_dir=str(tmp_path)), audio_renderer=counting
    )
    assert httpx.get(f"{server2.url}{rows[0]['CALL_RECORD_URL']}").content == bodies[0]
    assert len(renders) == 1


def test_default_renderer_serves_real_mp3_of_the_stated_duration(
    serve: Callable[..., Any],
) -> None:
    pytest.importorskip("calltexts_assets.sandbox.tones")
    mutagen_mp3 = pytest.importorskip("mutagen.mp3")
    rows = [r for r in generate_rows(6, START, 1, 60) if 5 <= int(r["CALL_DURATION"]) <= 30][:1]
    server, _ = serve(rows, audio_renderer=None)
    response = httpx.get(f"{server.url}{rows[0]['CALL_RECORD_URL']}", timeout=30)
    assert response.status_code == 200
    info = mutagen_mp3.MP3(io.BytesIO(response.content)).info
    assert abs(info.length - int(rows[0]["CALL_DURATION"])) <= 1.0
    assert info.channels == (2 if recording_is_stereo(rows[0]["CALL_ID"]) else 1)


# -- stats and seeding over HTTP -------------------------------------------------------------


def test_stats_reset_and_seed_endpoints(serve: Callable[..., Any]) -> None:
    server, portal = serve([])
    spec = {"seed": 3, "start": START.isoformat(), "days": 2, "calls_per_day": 30}
    assert httpx.post(f"{server.url}/_sandbox/seed", json=spec).json() == {"rows": 60}
    client = make_client(server)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=2)))
    assert got == as_served(SeedSpec(3, START, 2, 30).rows(), server.url)
    client.call("scope")
    stats = httpx.get(f"{server.url}/_sandbox/stats").json()
    # every command of the batch ran (pages after the last one fail on their reference)
    assert stats["requests"] == {"batch": 1, "voximplant.statistic.get": 50, "scope": 1}
    assert stats["http_requests"] == {"batch": 1, "scope": 1}
    assert httpx.post(f"{server.url}/_sandbox/reset-stats").json() == {"ok": True}
    assert portal.stats()["requests"] == {}
    bad = httpx.post(f"{server.url}/_sandbox/seed", json={"seed": 1})
    assert bad.status_code == 400


def test_long_recording_streams_in_chunks_into_a_callable(serve: Callable[..., Any]) -> None:
    row = {**generate_rows(6, START, 1, 1)[0], "CALL_DURATION": "1200", "RECORD_FILE_ID": "77"}
    row["CALL_RECORD_URL"] = "/sandbox/records/77.mp3"
    server, _ = serve([row])
    chunks: list[int] = []
    digest = hashlib.sha256()

    def sink(chunk: bytes) -> None:
        chunks.append(len(chunk))
        digest.update(chunk)

    result = make_client(server).download(f"{server.url}/sandbox/records/77.mp3", sink)
    expected = fake_mp3(row["CALL_ID"], 1200, recording_is_stereo(row["CALL_ID"]))
    assert result.bytes == sum(chunks) == len(expected) > 400_000
    assert len(chunks) > 1 and max(chunks) <= 128 * 1024  # never one whole-file buffer
    assert result.sha256 == digest.hexdigest() == hashlib.sha256(expected).hexdigest()
