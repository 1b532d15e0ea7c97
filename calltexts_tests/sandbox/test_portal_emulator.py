"""The sandbox portal over real loopback HTTP, driven by the production Bitrix24 client."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest

from calltexts_assets.clients.bitrix24 import (
    Bitrix24AuthError,
    Bitrix24Client,
    Bitrix24Error,
)
from calltexts_sandbox.calls.seed import (
    SeedSpec,
    day_counts,
    expected_day_counts,
    generate_rows,
    recording_format,
    recording_is_stereo,
)
from calltexts_sandbox.portal.files import SIGNED
from calltexts_sandbox.portal.state import Fault, PortalConfig
from calltexts_tests.sandbox.portal_support import (
    CODE,
    START,
    Served,
    as_served,
    make_client,
    midnight,
    unsigned,
)

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


def test_seed_rows_look_like_a_real_portals() -> None:
    """The shapes of docs/specs/bitrix24_wire.md §1, §7: numeric-or-null RECORD_FILE_ID,
    RUR, +7/7/8 numbers, CALL_TYPE 1-5, open failure codes, Drive-only recordings."""
    rows = generate_rows(1, START, 5, 400)
    answered = [r for r in rows if r["CALL_FAILED_CODE"] == "200"]
    failed = [r for r in rows if r["CALL_FAILED_CODE"] != "200"]
    assert 0.05 < len(failed) / len(rows) < 0.15
    assert {r["CALL_FAILED_CODE"] for r in failed} >= {"304", "603-S", "486", "OTHER"}
    assert all(r["CALL_DURATION"] == "0" and r["CALL_RECORD_URL"] == "" for r in failed)
    assert all(r["RECORD_FILE_ID"] is None for r in failed)
    assert all(isinstance(r["RECORD_FILE_ID"], int) for r in answered)  # a JSON number
    durations = [int(r["CALL_DURATION"]) for r in answered]
    assert 35 <= statistics.median(durations) <= 55
    assert max(durations) <= 1200 and min(durations) >= 1
    assert sum(d > 300 for d in durations) > 0  # a long tail
    assert {r["CALL_TYPE"] for r in rows} == {"1", "2", "3", "4", "5"}
    assert all(r["PORTAL_USER_ID"] is None for r in rows if r["CALL_TYPE"] == "5")
    assert {r["PHONE_NUMBER"][:2] for r in rows} == {"+7", "79", "89"}
    assert {r["COST_CURRENCY"] for r in rows} == {"RUR"}
    for row in rows:
        started = datetime.fromisoformat(row["CALL_START_DATE"])
        assert started.utcoffset() == timedelta(hours=3)
        assert 9 <= started.hour < 19
        assert row["CALL_ID"].startswith("sbx.")
    links = [r["CALL_RECORD_URL"] for r in answered]
    drive_only = sum(link is None for link in links) / len(links)
    signed = sum(link is not None and link.startswith(SIGNED) for link in links) / len(links)
    assert 0.2 < drive_only < 0.4 and 0.1 < signed < 0.3
    assert all(link is None or "record_id=" in link for link in links)
    stereo = [recording_is_stereo(r["CALL_ID"]) for r in answered]
    assert 0.75 < sum(stereo) / len(stereo) < 0.95  # most stereo, some mono
    wav = [recording_format(r["CALL_ID"]) == "wav" for r in answered]
    assert 0.05 < sum(wav) / len(wav) < 0.2  # WAV among the MP3s


def test_seed_in_another_zone_stays_in_its_working_day() -> None:
    rows = generate_rows(3, START, 2, 50, tz="Asia/Vladivostok")
    assert day_counts(rows, "Asia/Vladivostok") == {START: 50, START + timedelta(days=1): 50}
    assert all(r["CALL_START_DATE"].endswith("+10:00") for r in rows)


# -- listing ---------------------------------------------------------------------------------


def test_list_calls_three_days_at_150_a_day(serve: Callable[..., Served]) -> None:
    rows = generate_rows(11, START, 3, 150)
    # Neighbouring days that must not leak into the range.
    extra = generate_rows(11, START - timedelta(days=1), 1, 5) + generate_rows(
        11, START + timedelta(days=3), 1, 5
    )
    served = serve(extra[:5] + rows + extra[5:])
    client = make_client(served)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=3)))
    assert unsigned(got) == as_served(rows, served)
    assert day_counts(got) == expected_day_counts(11, START, 3, 150)
    assert served.portal.stats()["http_requests"] == {"batch": 1}


def test_list_calls_one_day_of_2600_calls_at_2_requests_a_second(
    serve: Callable[..., Served],
) -> None:
    rows = generate_rows(5, START, 1, 2600)
    served = serve(rows, config=PortalConfig(rate_per_sec=2.0, burst=2))
    client = make_client(served, requests_per_second=2.0)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    assert unsigned(got) == as_served(rows, served)
    stats = served.portal.stats()
    assert stats["http_requests"] == {"batch": 2}
    assert stats["rate_limited"] == 0
    assert served.portal.request_count("voximplant.statistic.get") == 100  # 2 batches x 50


def test_the_client_limiter_keeps_the_portal_limit_at_zero(serve: Callable[..., Served]) -> None:
    served = serve([], config=PortalConfig(rate_per_sec=2.0, burst=2))
    # Control: unpaced requests do run into the portal's leaky bucket.
    with httpx.Client() as raw:
        statuses = [
            raw.post(f"{served.url}/rest/1/{CODE}/scope.json").status_code for _ in range(6)
        ]
    assert statuses.count(503) >= 3
    served.portal.reset_stats()
    served.portal.set_rate_limit(2.0, burst=2)  # empty bucket again
    client = make_client(served, requests_per_second=2.0)
    for _ in range(6):
        client.call("scope")
    stats = served.portal.stats()
    assert stats["rate_limited"] == 0 and stats["responses"] == {"200": 6}
    assert client.stats.limit_hits == 0 and client.stats.retries == 0


def test_filters_sort_and_offset_paging(serve: Callable[..., Served]) -> None:
    rows = generate_rows(2, START, 1, 120)
    served = serve(rows)
    client = make_client(served)
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

    keyset = client.call(
        "voximplant.statistic.get",
        {"FILTER": {">=ID": rows[10]["ID"]}, "SORT": "ID", "ORDER": "ASC", "start": -1},
    )
    assert [r["ID"] for r in keyset["result"]] == [r["ID"] for r in rows[10:60]]
    # start=-1 counts nothing: total 0 and no next, though rows came (docs §1).
    assert keyset["total"] == 0 and "next" not in keyset

    default = client.call("voximplant.statistic.get", {"start": -1})
    assert default["result"][0]["ID"] == rows[-1]["ID"]  # newest first unless SORT says otherwise
    # ORDER must be exactly ASC or DESC, and a bad filter part is dropped, not refused.
    lower = client.call("voximplant.statistic.get", {"SORT": "ID", "ORDER": "asc", "start": -1})
    assert lower["result"][0]["ID"] == rows[-1]["ID"]
    odd = client.call("voximplant.statistic.get", {"FILTER": {"~ID": 1, "NOPE": 2}, "start": 0})
    assert odd["total"] == 120


def test_batch_references_halt_and_length(serve: Callable[..., Served]) -> None:
    rows = generate_rows(4, START, 1, 60)
    served = serve(rows)
    client = make_client(served)
    first = "voximplant.statistic.get?SORT=ID&ORDER=ASC&start=-1"
    answer = client.batch(
        {
            "a": first,
            "b": "voximplant.statistic.get?FILTER[ID]=$result[a][3][ID]&start=-1",
            "c": f"{first}&FILTER[>ID]=$result[a][99][ID]",
            "d": "scope",
        }
    )
    assert [r["ID"] for r in answer.result["b"]] == [rows[3]["ID"]]
    # An unresolvable reference is no error: `$result[a][99]` stops at the whole page,
    # an array under `>ID`, and the portal runs the command as if there were no filter.
    assert "c" not in answer.result_error
    assert [r["ID"] for r in answer.result["c"]] == [r["ID"] for r in rows[:50]]
    assert answer.result["d"] == ["telephony", "disk", "call", "user_brief"]
    assert answer.result_total["a"] == 0  # start=-1, inside a batch too
    halted = client.batch({"x": "no.such.method", "y": "scope"}, halt=True)
    assert "x" in halted.result_error and "y" not in halted.result
    assert served.portal.stats()["requests"]["batch"] == 2
    assert served.portal.request_count("voximplant.statistic.get") == 3  # commands in batches

    # Over 50 commands: the first 50 run, the others fail each (the request answers 200),
    # and a form-encoded halt=false is PHP-true.
    too_many = {f"cmd[c{i}]": "scope" for i in range(52)} | {"halt": "false"}
    response = httpx.post(f"{served.url}/rest/1/{CODE}/batch.json", data=too_many).json()
    assert len(response["result"]["result"]) == 50
    assert response["result"]["result_error"] == {
        "c50": {
            "error": "ERROR_BATCH_LENGTH_EXCEEDED",
            "error_description": "Max batch length exceeded",
        }
    }  # halted at the first failure: c51 never ran


def test_get_query_and_json_bodies(serve: Callable[..., Served]) -> None:
    rows = generate_rows(4, START, 1, 5)
    served = serve(rows)
    url = f"{served.url}/rest/1/{CODE}/voximplant.statistic.get.json"
    by_get = httpx.get(url, params={"FILTER[>ID]": rows[2]["ID"], "SORT": "ID", "ORDER": "ASC"})
    by_json = httpx.post(url, json={"FILTER": {">ID": rows[2]["ID"]}, "SORT": "ID", "ORDER": "ASC"})
    assert [r["ID"] for r in by_get.json()["result"]] == [r["ID"] for r in rows[3:]]
    assert unsigned(by_json.json()["result"]) == unsigned(by_get.json()["result"])


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/rest/1/wrongcode/scope.json", {}, "INVALID_CREDENTIALS"),  # a wrong webhook
        (f"/rest/2/{CODE}/scope.json", {}, "INVALID_CREDENTIALS"),
        ("/rest/scope.json", {}, "NO_AUTH_FOUND"),  # no credentials at all
        ("/rest/scope.json", {"auth": "nope"}, "invalid_token"),
    ],
)
def test_auth_errors_are_the_portals(
    serve: Callable[..., Served], path: str, params: dict[str, str], error: str
) -> None:
    served = serve([])
    response = httpx.get(f"{served.url}{path}", params=params)
    assert (response.status_code, response.json()["error"]) == (401, error)
    token = PortalConfig().oauth_tokens[0]
    assert httpx.get(f"{served.url}/rest/scope.json", params={"auth": token}).status_code == 200


def test_wrong_webhook_code_is_an_auth_error(serve: Callable[..., Served]) -> None:
    served = serve([])
    client = Bitrix24Client(webhook_url=f"{served.url}/rest/1/wrongcode/", requests_per_second=0)
    with pytest.raises(Bitrix24AuthError, match="invalid credentials") as info:
        client.call("scope")
    assert "wrongcode" not in str(info.value)


# -- limits ----------------------------------------------------------------------------------


def test_a_method_over_its_running_time_is_blocked_until_its_reset(
    serve: Callable[..., Served],
) -> None:
    """The load limiter (docs §4): each statistic call costs 0.6 s here, the limit is 1 s."""
    config = PortalConfig(
        rate_per_sec=0,
        operating_limit_sec=1.0,
        operating_window_sec=600.0,
        operating_cost_sec={"voximplant.statistic.get": 0.6},
    )
    served = serve(generate_rows(4, START, 1, 5), config=config)
    url = f"{served.url}/rest/1/{CODE}/voximplant.statistic.get.json"
    answers = [httpx.post(url, data={"start": "-1"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"] == "OPERATION_TIME_LIMIT"
    block = answers[1].json()["time"]
    assert block["operating"] == pytest.approx(1.2, abs=0.1)
    assert block["operating_reset_at"] - block["start"] in (600, 601)
    # Inside a batch the refusal is the command's, under HTTP 200; other methods still run.
    batch = httpx.post(
        f"{served.url}/rest/1/{CODE}/batch.json",
        data={"cmd[a]": "voximplant.statistic.get?start=-1", "cmd[b]": "scope"},
    )
    assert batch.status_code == 200
    result = batch.json()["result"]
    assert result["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    assert result["result"]["b"] == ["telephony", "disk", "call", "user_brief"]
    assert served.portal.stats()["operation_time_limited"] == 2


def test_a_method_outside_the_scopes_is_insufficient_scope(serve: Callable[..., Served]) -> None:
    served = serve(
        generate_rows(4, START, 1, 5), config=PortalConfig(rate_per_sec=0, scopes=("telephony",))
    )
    alone = httpx.post(f"{served.url}/rest/1/{CODE}/disk.file.get.json", data={"id": "1"})
    assert (alone.status_code, alone.json()["error"]) == (401, "insufficient_scope")
    batch = httpx.post(
        f"{served.url}/rest/1/{CODE}/batch.json",
        data={"cmd[f]": "disk.file.get?id=1", "cmd[s]": "voximplant.statistic.get?start=-1"},
    ).json()["result"]
    assert batch["result_error"]["f"]["error"] == "insufficient_scope"
    assert "s" in batch["result"]


# -- faults ----------------------------------------------------------------------------------


def test_503_burst_is_absorbed_by_retries(serve: Callable[..., Served]) -> None:
    rows = generate_rows(9, START, 1, 120)
    served = serve(rows, faults=[Fault("status", "voximplant.statistic.get", times=3)])
    client = make_client(served)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    assert unsigned(got) == as_served(rows, served)
    assert (client.stats.retries, client.stats.limit_hits) == (3, 3)
    stats = served.portal.stats()
    assert stats["faults_fired"] == {"status": 3}
    assert stats["responses"] == {"200": 1, "503": 3}
    assert served.portal.faults == []  # spent faults are gone


def test_an_operation_time_limit_storm_delays_the_listing_and_loses_nothing(
    serve: Callable[..., Served],
) -> None:
    rows = generate_rows(9, START, 1, 400)
    config = PortalConfig(rate_per_sec=0, operating_window_sec=1.0)  # resets come quickly
    served = serve(rows, config=config)
    served.portal.add_fault(kind="operation_time_limit", target="voximplant.statistic.get", times=3)
    client = make_client(served)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=1)))
    assert unsigned(got) == as_served(rows, served)
    # The three refused pages were in the first request: one wait for the reset, then the
    # next request starts again at the first refused page; nothing counts as a retry.
    assert client.stats.blocked == 3 and client.stats.operating_waits == 1
    assert client.stats.retries == 0 and client.stats.requests == 2


def test_faults_through_the_admin_endpoint(serve: Callable[..., Served]) -> None:
    served = serve([])
    client = make_client(served)
    faults = [
        {"kind": "status", "target": "scope", "status": 500, "times": 1},
        {"kind": "status", "target": "scope", "status": 429, "retry_after": 2, "times": 1},
        {"kind": "html", "target": "scope", "status": 502, "times": 1},
    ]
    answer = httpx.post(f"{served.url}/_sandbox/faults", json={"faults": faults}).json()
    assert [f["status"] for f in answer["faults"]] == [500, 429, 502]
    assert client.call("scope")["result"] == ["telephony", "disk", "call", "user_brief"]
    assert client.stats.retries == 3 and client.stats.limit_hits == 1

    httpx.post(f"{served.url}/_sandbox/faults", json={"kind": "expired_token", "times": None})
    for _ in range(2):  # until cleared
        with pytest.raises(Bitrix24AuthError, match="access token expired"):
            client.call("scope")
    assert httpx.delete(f"{served.url}/_sandbox/faults").json() == {"faults": []}
    assert client.call("scope")["result"]

    bad = httpx.post(f"{served.url}/_sandbox/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.text
    assert served.portal.request_count("scope") == 7


def test_html_200_is_not_retried(serve: Callable[..., Served]) -> None:
    served = serve([])
    served.portal.add_fault(kind="html", target="*", status=200)
    with pytest.raises(Bitrix24Error, match=r"HTML instead of JSON \(status 200\)"):
        make_client(served).call("scope")
    assert served.portal.request_count("scope") == 1


def test_latency_beyond_the_client_timeout_is_retried(serve: Callable[..., Served]) -> None:
    served = serve([])
    # a second's margin on each side: the retry's answer must come within the timeout on
    # a loaded machine too
    served.portal.add_fault(kind="latency", target="scope", delay_sec=2.0)
    client = make_client(served, timeout_sec=1.0)
    assert client.call("scope")["result"]
    assert client.stats.retries == 1 and served.portal.request_count("scope") == 2


# -- stats and seeding over HTTP -------------------------------------------------------------


def test_stats_reset_and_seed_endpoints(serve: Callable[..., Served]) -> None:
    served = serve([])
    spec = {"seed": 3, "start": START.isoformat(), "days": 2, "calls_per_day": 30}
    seeded = httpx.post(f"{served.url}/_sandbox/seed", json=spec).json()
    client = make_client(served)
    got = client.list_calls(midnight(START), midnight(START + timedelta(days=2)))
    recorded = [r for r in got if r.get("RECORD_FILE_ID") or r.get("CALL_RECORD_URL")]
    assert seeded == {"rows": 60, "recorded": len(recorded)} and 0 < len(recorded) < 60
    assert unsigned(got) == as_served(SeedSpec(3, START, 2, 30).rows(), served)
    client.call("scope")
    stats = httpx.get(f"{served.url}/_sandbox/stats").json()
    # every command of the batch ran (the pages after the last one on a dropped filter)
    assert stats["requests"] == {"batch": 1, "voximplant.statistic.get": 50, "scope": 1}
    assert stats["http_requests"] == {"batch": 1, "scope": 1}
    assert httpx.post(f"{served.url}/_sandbox/reset-stats").json() == {"ok": True}
    assert served.portal.stats()["requests"] == {}
    bad = httpx.post(f"{served.url}/_sandbox/seed", json={"seed": 1})
    assert bad.status_code == 400
