"""The portal's per-method running-time limit (`operating`, OPERATION_TIME_LIMIT) and auth
errors inside `batch`, against documented answers (respx)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from calltexts_assets.clients.bitrix24 import Bitrix24AuthError, Bitrix24Client, Bitrix24Error
from calltexts_assets.clients.bitrix24.limits import OperatingBudget
from calltexts_tests.clients.test_bitrix24_client import (
    API,
    DAY,
    STAT,
    WEBHOOK,
    FakeBatchPortal,
    make_rows,
    payload,
)

BLOCKED = payload("error_operation_time_limit.json")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps(clock: FakeClock) -> list[float]:
    return []


@pytest.fixture
def client(clock: FakeClock, sleeps: list[float]) -> Iterator[Bitrix24Client]:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    c = Bitrix24Client(
        webhook_url=WEBHOOK,
        requests_per_second=0,
        retry_wait_scale=0.001,
        sleep=sleep,
        budget=OperatingBudget(bucket_sec=60.0, clock=clock),
    )
    yield c
    c.close()


def time_block(operating: float, reset_in: int) -> dict[str, Any]:
    """The docs' `time` block with the given budget (payload time_block_with_operating)."""
    block = dict(payload("time_block_with_operating.json")["time"])
    block["operating"] = operating
    block["finish"] = float(int(block["finish"]))  # whole seconds: the waits read exactly
    block["operating_reset_at"] = int(block["finish"]) + reset_in
    return block


def commands_of(request: httpx.Request) -> dict[str, str]:
    form = parse_qsl(request.content.decode(), keep_blank_values=True)
    return {k[4:-1]: v for k, v in form if k.startswith("cmd[")}


@respx.mock
def test_blocked_commands_inside_a_batch_are_sent_again_alone_after_the_reset(
    client: Bitrix24Client, sleeps: list[float]
) -> None:
    first = {
        "result": {
            "result": {"a": {"ID": "1"}, "c": {"ID": "3"}},
            "result_error": {"b": BLOCKED},
            "result_time": {"a": time_block(300.0, 37)},
        },
        "time": time_block(0.0, 600),
    }
    second = {"result": {"result": {"b": {"ID": "2"}}, "result_error": []}, "time": {}}
    route = respx.post(f"{API}/batch.json").mock(
        side_effect=[httpx.Response(200, json=first), httpx.Response(200, json=second)]
    )
    answer = client.batch({name: ("disk.file.get", {"id": name}) for name in "abc"})
    assert answer.result == {"a": {"ID": "1"}, "b": {"ID": "2"}, "c": {"ID": "3"}}
    assert answer.result_error == {}
    assert list(commands_of(route.calls[1].request)) == ["b"]  # only the refused one
    assert sleeps == [37]  # until the reset the method's last answer announced
    assert (client.stats.blocked, client.stats.operating_waits) == (1, 1)


@respx.mock
def test_a_block_without_an_announced_reset_waits_a_bucket_and_fails_after_ten_minutes(
    client: Bitrix24Client, sleeps: list[float]
) -> None:
    refused = {"result": {"result": [], "result_error": {"a": BLOCKED}}, "time": {}}
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=refused))
    with pytest.raises(Bitrix24Error, match="OPERATION_TIME_LIMIT for 660 s") as info:
        client.batch({"a": ("disk.file.get", {"id": 1})})
    assert info.value.code == "OPERATION_TIME_LIMIT"
    assert sleeps == [60.0] * 11


class BlockingPortal(FakeBatchPortal):
    """FakeBatchPortal whose statistic method is refused from command `at` of request `on`."""

    def __init__(self, rows: list[dict[str, Any]], *, on: int, at: int) -> None:
        super().__init__(rows, "blank")
        self.on, self.at = on, at
        self.floors: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.floors.append(
            dict(parse_qsl(commands_of(request)["p0"].partition("?")[2]))["FILTER[>ID]"]
        )
        response = super().__call__(request)
        body = response.json()
        if self.batches == self.on:
            results = body["result"]["result"]
            for k in range(self.at, 50):
                results.pop(f"p{k}", None)  # a real portal runs them on a broken filter
            body["result"]["result_error"] = {f"p{self.at}": BLOCKED}
            body["result"]["result_time"] = {"p0": time_block(430.0, 12)}
        return httpx.Response(200, json=body)


@respx.mock
def test_a_listing_blocked_mid_batch_waits_and_goes_on_from_the_refused_page(
    client: Bitrix24Client, sleeps: list[float]
) -> None:
    rows = make_rows(400)
    portal = BlockingPortal(rows, on=1, at=3)
    respx.post(f"{API}/batch.json").mock(side_effect=portal)
    batches = list(client.iter_call_batches(DAY, DAY + timedelta(days=2)))
    assert [len(b) for b in batches] == [150, 250]
    assert [r for b in batches for r in b] == rows  # nothing lost, nothing twice
    assert portal.floors == ["0", rows[149]["ID"]]  # the second request starts at page 4
    assert sleeps == [12]


@respx.mock
def test_the_client_slows_down_before_the_limit(client: Bitrix24Client, sleeps: list[float]):
    answers = iter([time_block(400.0, 90), time_block(10.0, 600), time_block(10.0, 600)])
    route = respx.post(f"{API}/{STAT}.json").mock(
        side_effect=lambda request: httpx.Response(200, json={"result": [], "time": next(answers)})
    )
    respx.post(f"{API}/scope.json").mock(return_value=httpx.Response(200, json={"result": []}))
    client.call(STAT)  # 400 s of 420 spent
    client.call("scope")  # another method: no wait
    assert sleeps == []
    client.call(STAT)
    assert sleeps == [90] and route.call_count == 2
    client.call(STAT)  # the budget the portal announced since is small again
    assert sleeps == [90]


@respx.mock
def test_a_blocked_method_waits_for_its_reset_without_spending_retries(
    client: Bitrix24Client, sleeps: list[float]
) -> None:
    respx.post(f"{API}/{STAT}.json").mock(
        side_effect=[
            httpx.Response(200, json={"result": [], "time": time_block(100.0, 25)}),
            httpx.Response(429, json=BLOCKED),
            httpx.Response(200, json={"result": ["ok"], "time": time_block(1.0, 600)}),
        ]
    )
    client.call(STAT)
    assert client.call(STAT)["result"] == ["ok"]
    assert sleeps == [25]
    assert (client.stats.retries, client.stats.blocked, client.stats.limit_hits) == (0, 1, 0)


@respx.mock
def test_a_missing_scope_inside_a_batch_stops_with_the_scope_named(client: Bitrix24Client):
    answer = payload("batch_response_with_error.json")  # the docs' insufficient_scope example
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(Bitrix24AuthError, match="lacks the `user_brief` scope") as named:
        client.batch({"get_user": "user.current", "get_department": "department.get"})
    assert named.value.method == "user.current"
    error = answer["result"]["result_error"]["get_user"]
    # A method whose scope the client does not know is still named, with a generic hint.
    answer["result"]["result_error"] = {"get_department": error}
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(Bitrix24AuthError, match="a scope this method needs") as generic:
        client.batch({"get_user": "user.current", "get_department": "department.get"})
    assert generic.value.method == "department.get"
    answer["result"]["result_error"] = {"f1": error}
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(Bitrix24AuthError, match="lacks the `disk` scope"):
        client.batch({"f1": ("disk.file.get", {"id": 9079})})


@respx.mock
def test_access_denied_inside_the_listing_names_the_permission(client: Bitrix24Client) -> None:
    denied = payload("voximplant_statistic_get_error_access_denied.json")
    body = {"result": {"result": [], "result_error": {"p0": denied}}, "time": {}}
    respx.post(f"{API}/batch.json").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(Bitrix24AuthError, match="'Call statistics: view'"):
        client.list_calls(DAY, DAY + timedelta(days=1))
