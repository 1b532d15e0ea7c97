"""Bitrix24 client against respx-mocked answers: paging, batch, retries, errors, downloads."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
import respx

from calltexts_assets.clients.bitrix24 import (
    Bitrix24AuthError,
    Bitrix24Client,
    Bitrix24Error,
    RecordingMissing,
    encode_command,
    flatten_params,
)
from calltexts_assets.resources.bitrix24 import Bitrix24Resource

PAYLOADS = Path(__file__).resolve().parents[2] / "docs" / "specs" / "payloads" / "bitrix24"
STAT = "voximplant.statistic.get"
SECRET = "s3cr3tWebhookCode"
WEBHOOK = f"https://portal.example.ru/rest/1/{SECRET}/"
API = f"https://portal.example.ru/rest/1/{SECRET}"
RECORD_URL = "https://portal.example.ru/disk/record/17.mp3"
MSK = ZoneInfo("Europe/Moscow")
DAY = datetime(2026, 11, 2, tzinfo=MSK)
SCALE = 0.001
EXPECTED_WAITS = [w * SCALE for w in (5, 15, 30, 60, 120)]


@pytest.fixture
def sleeps() -> list[float]:
    return []


def public_dns(host: str) -> list[str]:
    """Name resolution for the respx tests: every name is on a public address (no test may
    resolve a real name)."""
    return ["93.184.215.14"]


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[Bitrix24Client]:
    c = Bitrix24Client(
        webhook_url=WEBHOOK,
        requests_per_second=0,
        retry_wait_scale=SCALE,
        sleep=sleeps.append,
        resolve=public_dns,
    )
    yield c
    c.close()


def payload(name: str) -> Any:
    """A documented answer of docs/specs/payloads/bitrix24."""
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def make_rows(count: int) -> list[dict[str, Any]]:
    """`count` rows with gaps in the IDs (as after deletions), spread over DAY."""
    return [
        {
            "ID": str(1000 + 3 * n),
            "CALL_ID": f"c{n}",
            "CALL_START_DATE": (DAY + timedelta(seconds=30 * n)).isoformat(),
        }
        for n in range(count)
    ]


class FakeBatchPortal:
    """Just enough `batch` + keyset `voximplant.statistic.get` to test the paging logic.

    `unresolved="error"` fails a command whose `$result[...]` reference cannot be resolved
    (as the sandbox does); `"blank"` substitutes "" (so `FILTER[>ID]` is dropped and the
    command returns the first page again, a plausible real-portal behaviour).
    """

    ref = re.compile(r"\$result\[(\w+)\]\[(\d+)\]\[(\w+)\]")

    def __init__(self, rows: list[dict[str, Any]], unresolved: str = "error") -> None:
        self.rows = rows
        self.unresolved = unresolved
        self.batches = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.batches += 1
        form = parse_qsl(request.content.decode(), keep_blank_values=True)
        commands = [(k[4:-1], v) for k, v in form if k.startswith("cmd[")]
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for name, command in commands:
            method, _, query = command.partition("?")
            assert method == "voximplant.statistic.get"
            params = dict(parse_qsl(query, keep_blank_values=True))
            assert params["SORT"] == "ID" and params["ORDER"] == "ASC" and params["start"] == "-1"
            floor = params["FILTER[>ID]"]
            match = self.ref.fullmatch(floor)
            if match:
                page = results.get(match.group(1))
                index = int(match.group(2))
                if page is None or index >= len(page):
                    if self.unresolved == "error":
                        errors[name] = {"error": "ERROR_BATCH_REFERENCE", "error_description": "x"}
                        continue
                    floor = ""
                else:
                    floor = page[index][match.group(3)]
            hits = [r for r in self.rows if not floor or int(r["ID"]) > int(floor)]
            results[name] = hits[:50]
        body = {"result": {"result": results or [], "result_error": errors or []}}
        return httpx.Response(200, json=body)


@pytest.mark.parametrize("unresolved", ["error", "blank"])
@pytest.mark.parametrize(
    ("count", "batches"),
    [
        (0, 1),
        (1, 1),
        (49, 1),
        (50, 1),
        (51, 1),
        (149, 1),
        (150, 1),
        (2499, 1),
        (2500, 2),
        (2600, 2),
    ],
)
@respx.mock
def test_list_calls_pages_by_id_through_batches(
    client: Bitrix24Client, count: int, batches: int, unresolved: str
) -> None:
    rows = make_rows(count)
    portal = FakeBatchPortal(rows, unresolved)
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    got = client.list_calls(DAY, DAY + timedelta(days=2))
    assert got == rows  # complete, in order, no duplicates
    assert portal.batches == batches
    assert client.stats.requests == batches


@respx.mock
def test_list_calls_sends_the_period_as_instants(client: Bitrix24Client) -> None:
    route = respx.post(f"{API}/batch.json").mock(side_effect=FakeBatchPortal([]))
    client.list_calls(DAY, DAY + timedelta(days=1))
    form = dict(parse_qsl(route.calls[0].request.content.decode()))
    first = dict(parse_qsl(form["cmd[p0]"].partition("?")[2]))
    assert first["FILTER[>=CALL_START_DATE]"] == "2026-11-02T00:00:00+03:00"
    assert first["FILTER[<CALL_START_DATE]"] == "2026-11-03T00:00:00+03:00"
    assert first["FILTER[>ID]"] == "0"
    assert (
        dict(parse_qsl(form["cmd[p1]"].partition("?")[2]))["FILTER[>ID]"] == "$result[p0][49][ID]"
    )
    assert len([k for k in form if k.startswith("cmd[")]) == 50


@respx.mock
def test_list_calls_rejects_a_portal_that_ignores_the_order(client: Bitrix24Client) -> None:
    rows = list(reversed(make_rows(3)))
    respx.post(f"{API}/batch.json").mock(
        return_value=httpx.Response(200, json={"result": {"result": {"p0": rows}}})
    )
    with pytest.raises(Bitrix24Error, match="out of order"):
        client.list_calls(DAY, DAY + timedelta(days=1))


@respx.mock
def test_list_calls_fails_on_a_page_error_after_a_full_page(client: Bitrix24Client) -> None:
    body = {
        "result": {
            "result": {"p0": make_rows(50)},
            "result_error": {"p1": {"error": "INTERNAL", "error_description": "db gone"}},
        }
    }
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(Bitrix24Error, match="p1 failed inside batch: INTERNAL: db gone"):
        client.list_calls(DAY, DAY + timedelta(days=1))


@respx.mock
def test_list_calls_drops_rows_outside_the_period(client: Bitrix24Client) -> None:
    rows = make_rows(3)
    rows[0]["CALL_START_DATE"] = (DAY - timedelta(seconds=1)).isoformat()
    respx.post(f"{API}/batch.json").mock(side_effect=FakeBatchPortal(rows))
    assert client.list_calls(DAY, DAY + timedelta(days=1)) == rows[1:]


def test_list_calls_needs_aware_datetimes(client: Bitrix24Client) -> None:
    with pytest.raises(ValueError, match="aware"):
        client.list_calls(datetime(2026, 11, 2), datetime(2026, 11, 3))


@respx.mock
def test_batch_encodes_commands_and_reads_all_sections(client: Bitrix24Client) -> None:
    answer = {
        "result": {
            "result": {"a": [{"ID": "1"}], "b": {"x": 1}},
            "result_error": [],
            "result_total": {"a": 7},
            "result_next": {"a": 50},
            "result_time": {"a": {"duration": 0.1}},
        },
        "time": {},
    }
    route = respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=answer))
    result = client.batch(
        {
            "a": ("voximplant.statistic.get", {"FILTER": {">=ID": 5}, "SORT": "ID"}),
            "b": "scope",
        },
        halt=True,
    )
    form = parse_qsl(route.calls[0].request.content.decode())
    assert ("halt", "1") in form
    assert ("cmd[a]", "voximplant.statistic.get?FILTER%5B%3E%3DID%5D=5&SORT=ID") in form
    assert ("cmd[b]", "scope") in form
    assert result.result["a"] == [{"ID": "1"}]
    assert result.result_error == {}  # PHP's [] for an empty section
    assert (result.result_total, result.result_next) == ({"a": 7}, {"a": 50})
    assert client.stats.batch_commands == {"voximplant.statistic.get": 1, "scope": 1}


def test_batch_refuses_more_than_50_commands(client: Bitrix24Client) -> None:
    with pytest.raises(ValueError, match="at most 50"):
        client.batch({f"c{i}": "scope" for i in range(51)})


def test_flatten_params_nests_like_php() -> None:
    assert flatten_params({"FILTER": {">ID": 5, "CALL_TYPE": [1, 2]}, "start": -1, "x": None}) == [
        ("FILTER[>ID]", "5"),
        ("FILTER[CALL_TYPE][0]", "1"),
        ("FILTER[CALL_TYPE][1]", "2"),
        ("start", "-1"),
        ("x", ""),
    ]
    assert encode_command("scope") == "scope"


@respx.mock
def test_query_limit_exceeded_then_success(client: Bitrix24Client, sleeps: list[float]) -> None:
    limited = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    route = respx.post(f"{API}/scope.json").mock(
        side_effect=[httpx.Response(503, json=limited), httpx.Response(200, json={"result": ["x"]})]
    )
    assert client.call("scope")["result"] == ["x"]
    assert route.call_count == 2
    assert sleeps == pytest.approx(EXPECTED_WAITS[:1])
    assert (client.stats.requests, client.stats.retries, client.stats.limit_hits) == (2, 1, 1)


@respx.mock
def test_retry_after_lengthens_the_wait(client: Bitrix24Client, sleeps: list[float]) -> None:
    route = respx.post(f"{API}/scope.json").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "42"}, json={"error": "x"}),
            httpx.Response(200, json={"result": []}),
        ]
    )
    client.call("scope")
    assert route.call_count == 2
    assert sleeps == pytest.approx([42 * SCALE])


@respx.mock
def test_five_failures_give_a_clear_error_after_exactly_six_attempts(
    client: Bitrix24Client, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    limited = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    route = respx.post(f"{API}/voximplant.statistic.get.json").mock(
        return_value=httpx.Response(503, json=limited)
    )
    with pytest.raises(Bitrix24Error) as info:
        client.call("voximplant.statistic.get", {"start": 0})
    assert route.call_count == 6
    assert sleeps == pytest.approx(EXPECTED_WAITS)
    message = str(info.value)
    assert "voximplant.statistic.get failed after 6 attempts" in message
    assert "HTTP 503 QUERY_LIMIT_EXCEEDED: Too many requests" in message
    assert "https://portal.example.ru/rest/1/***/voximplant.statistic.get.json" in message
    assert SECRET not in message and SECRET not in caplog.text
    assert info.value.attempts == 6 and info.value.code == "QUERY_LIMIT_EXCEEDED"
    assert (client.stats.retries, client.stats.limit_hits) == (5, 6)
    assert not client.limiter.low_rate  # 6 hits: not yet more than 10 in 15 minutes
    assert caplog.text.count("retrying in") == 5
    # Six more refusals in the window: the client slows down (test_ratelimit: to a quarter).
    with pytest.raises(Bitrix24Error):
        client.call("voximplant.statistic.get", {"start": 0})
    assert client.stats.limit_hits == 12 and client.limiter.low_rate


@respx.mock
def test_connect_errors_and_timeouts_are_retried(client: Bitrix24Client) -> None:
    route = respx.post(f"{API}/scope.json").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(500, json={"error": "INTERNAL_SERVER_ERROR"}),
            httpx.Response(200, json={"result": ["ok"]}),
        ]
    )
    assert client.call("scope")["result"] == ["ok"]
    assert route.call_count == 4 and client.stats.retries == 3


@respx.mock
def test_expired_token_is_not_retried_and_says_what_to_do(client: Bitrix24Client) -> None:
    body = {"error": "expired_token", "error_description": "The access token provided has expired."}
    route = respx.post(f"{API}/scope.json").mock(return_value=httpx.Response(401, json=body))
    with pytest.raises(Bitrix24AuthError, match="access token expired: refresh the OAuth token"):
        client.call("scope")
    assert route.call_count == 1 and client.stats.retries == 0


@pytest.mark.parametrize(("method", "scope"), [(STAT, "telephony"), ("disk.file.get", "disk")])
@pytest.mark.parametrize("status", [401, 403])  # 401 on the wire, 403 in the docs
@respx.mock
def test_a_missing_scope_is_named(client: Bitrix24Client, method: str, scope: str, status: int):
    body = payload("error_insufficient_scope_webhook.json")
    route = respx.post(f"{API}/{method}.json").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(Bitrix24AuthError, match=f"lacks the `{scope}` scope"):
        client.call(method, {"id": 1})
    assert route.call_count == 1


@respx.mock
def test_html_with_status_200_is_a_clear_error_without_retry(client: Bitrix24Client) -> None:
    page = "<!DOCTYPE html><html><body>Portal maintenance</body></html>"
    route = respx.post(f"{API}/scope.json").mock(return_value=httpx.Response(200, text=page))
    with pytest.raises(Bitrix24Error) as info:
        client.call("scope")
    assert "portal answered HTML instead of JSON (status 200): first bytes '<!DOCTYPE" in str(
        info.value
    )
    assert route.call_count == 1


@respx.mock
def test_html_502_from_a_proxy_is_retried(client: Bitrix24Client) -> None:
    route = respx.post(f"{API}/scope.json").mock(
        side_effect=[
            httpx.Response(502, html="<html><h1>502 Bad Gateway</h1></html>"),
            httpx.Response(200, json={"result": ["ok"]}),
        ]
    )
    assert client.call("scope")["result"] == ["ok"]
    assert route.call_count == 2


@respx.mock
def test_json_error_carries_code_and_description(client: Bitrix24Client) -> None:
    body = {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    route = respx.post(f"{API}/nope.json").mock(return_value=httpx.Response(404, json=body))
    with pytest.raises(Bitrix24Error, match="nope: ERROR_METHOD_NOT_FOUND: Method not found!"):
        client.call("nope")
    assert route.call_count == 1


@respx.mock
def test_oauth_form_sends_the_token_in_the_body_and_masks_it() -> None:
    token = "oauth-access-token-xyz"
    client = Bitrix24Client(
        oauth_token=token, portal_url="https://portal.example.ru", requests_per_second=0
    )
    route = respx.post("https://portal.example.ru/rest/scope.json").mock(
        return_value=httpx.Response(400, json={"error": "BAD", "error_description": f"tok {token}"})
    )
    with pytest.raises(Bitrix24Error) as info:
        client.call("scope")
    assert ("auth", token) in parse_qsl(route.calls[0].request.content.decode())
    assert token not in str(info.value)


def test_no_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="webhook_url, or oauth_token"):
        Bitrix24Client()


# -- downloads -------------------------------------------------------------------------------

AUDIO = bytes(range(256)) * 1000  # 256,000 bytes of "audio"


class _BrokenStream(httpx.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@respx.mock
def test_truncated_download_is_retried_and_the_checksum_is_right(
    client: Bitrix24Client, sleeps: list[float]
) -> None:
    full = {"Content-Length": str(len(AUDIO)), "Content-Type": "audio/mpeg"}
    route = respx.get(
        RECORD_URL
    ).mock(
        side_effect=[
            httpx.Response(200, headers=full, content=AUDIO[:100_000]),  # short body
            httpx.Response(200, headers=full, stream=_BrokenStream(AUDIO[:150_000])),
            httpx.Response(200, headers=full, content=AUDIO),
        ]
    )
    sink = io.BytesIO()
    result = client.download(RECORD_URL, sink)
    assert route.call_count == 3 and sleeps == pytest.approx(EXPECTED_WAITS[:2])
    # The sink was never rewound: a retry skips what it already has.
    assert sink.getvalue() == AUDIO
    assert result.bytes == len(AUDIO)
    assert result.sha256 == hashlib.sha256(AUDIO).hexdigest()
    assert result.content_type == "audio/mpeg"


@respx.mock
def test_download_into_a_callable_sink(client: Bitrix24Client) -> None:
    respx.get(RECORD_URL).mock(return_value=httpx.Response(200, content=AUDIO))
    chunks: list[bytes] = []
    result = client.download(RECORD_URL, chunks.append)
    assert b"".join(chunks) == AUDIO
    assert result.sha256 == hashlib.sha256(AUDIO).hexdigest()


@respx.mock
def test_truncated_every_time_gives_a_clear_error(client: Bitrix24Client) -> None:
    full = {"Content-Length": str(len(AUDIO))}
    route = respx.get(RECORD_URL).mock(
        side_effect=lambda request: httpx.Response(200, headers=full, content=AUDIO[:10])
    )
    with pytest.raises(Bitrix24Error, match="download failed after 6 attempts: truncated"):
        client.download(RECORD_URL, io.BytesIO())
    assert route.call_count == 6


@pytest.mark.parametrize("status", [404, 410])
@respx.mock
def test_missing_recording_is_not_retried(client: Bitrix24Client, status: int) -> None:
    route = respx.get(RECORD_URL).mock(return_value=httpx.Response(status))
    with pytest.raises(RecordingMissing) as info:
        client.download(RECORD_URL, io.BytesIO())
    assert route.call_count == 1
    assert info.value.code == f"http_{status}" and info.value.status == status


@respx.mock
def test_html_instead_of_audio_is_a_clear_error(client: Bitrix24Client) -> None:
    respx.get(RECORD_URL).mock(
        return_value=httpx.Response(200, html="<html><body>Please log in</body></html>")
    )
    sink = io.BytesIO()
    with pytest.raises(Bitrix24Error, match=r"HTML instead of audio \(status 200\)"):
        client.download(RECORD_URL, sink)
    assert sink.getvalue() == b""  # nothing of the page reached the sink


@respx.mock
def test_download_errors_mask_credentials_in_the_url(client: Bitrix24Client) -> None:
    url = f"https://portal.example.ru/rest/1/{SECRET}/disk.file.get?auth=tok999"
    respx.get(url).mock(return_value=httpx.Response(404))
    with pytest.raises(RecordingMissing) as info:
        client.download(url, io.BytesIO())
    assert SECRET not in str(info.value) and "tok999" not in str(info.value)
    assert "/rest/1/***/disk.file.get?auth=***" in str(info.value)


# -- the Dagster resource ------------------------------------------------------------------


@respx.mock
def test_resource_shares_one_client_and_works_in_an_asset() -> None:
    respx.post(f"{API}/batch.json").mock(side_effect=FakeBatchPortal(make_rows(3)))
    resource = Bitrix24Resource(webhook_url=WEBHOOK, requests_per_second=0, retry_wait_scale=0)
    assert resource.get_client() is resource.get_client()
    assert resource.retry_waits == [5, 15, 30, 60, 120]

    @dg.asset
    def listed(bitrix24: Bitrix24Resource) -> dg.MaterializeResult:
        client = bitrix24.get_client()
        rows = client.list_calls(DAY, DAY + timedelta(days=1))
        return dg.MaterializeResult(metadata={"rows": len(rows), "requests": client.stats.requests})

    result = dg.materialize([listed], resources={"bitrix24": resource})
    metadata = result.asset_materializations_for_node("listed")[0].metadata
    assert metadata["rows"].value == 3 and metadata["requests"].value == 1


@respx.mock
def test_call_batches_come_one_request_at_a_time(client: Bitrix24Client) -> None:
    rows = make_rows(2600)
    portal = FakeBatchPortal(rows, "error")
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    batches = client.iter_call_batches(DAY, DAY + timedelta(days=2))
    first = next(batches)
    # The second request is made only when the caller is done with the first answer.
    assert (len(first), portal.batches) == (2500, 1)
    assert [len(b) for b in batches] == [100]
    assert portal.batches == 2


@respx.mock
def test_a_webhook_code_with_a_space_never_shows_in_retry_logs(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spaced = Bitrix24Client(
        webhook_url="https://portal.example.ru/rest/1/half one half two/",
        requests_per_second=0,
        retry_wait_scale=SCALE,
        sleep=sleeps.append,
    )
    respx.post(url__regex=r".*/scope\.json").mock(
        side_effect=[
            httpx.Response(503, json={"error": "QUERY_LIMIT_EXCEEDED"}),
            httpx.Response(200, json={"result": ["telephony"]}),
        ]
    )
    spaced.call("scope")
    assert "retrying in" in caplog.text
    assert "half" not in caplog.text and "two" not in caplog.text
