"""OAuth: the access token is refreshed before its hour is over and after `expired_token`,
the new pair is kept for the next run, and a refused refresh fails clearly (respx, with the
documented answers of docs/specs/payloads/bitrix24)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from calltexts_assets.clients.bitrix24 import Bitrix24AuthError, Bitrix24Client
from calltexts_assets.clients.bitrix24.oauth import REFRESH_MARGIN_SEC, OAuthSession
from calltexts_assets.state.token_store import TokenPair, TokenStore
from calltexts_tests.clients.test_bitrix24_client import payload
from calltexts_tests.clients.test_bitrix24_limits import FakeClock

PORTAL = "https://portal.example.ru"
REST = f"{PORTAL}/rest"
TOKEN_URL = "https://oauth.example/oauth/token/"
CLIENT_SECRET = "client-secret-value"
NOW = 1_780_000_000.0


class Clock(FakeClock):
    """The limits tests' clock, on the Unix time of the tokens' `expires` here."""

    def __init__(self) -> None:
        self.now = NOW


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    found = TokenStore.at(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield found
    found.dispose()


def session(store: TokenStore | None, clock: Clock, access: str = "old-access") -> OAuthSession:
    return OAuthSession(
        portal_url=PORTAL,
        access_token=access,
        refresh_token="old-refresh",
        client_id="app.1",
        client_secret=CLIENT_SECRET,
        server_url="https://oauth.example",
        store=store,
        clock=clock,
        sleep=lambda seconds: None,
    )


def client_of(oauth: OAuthSession) -> Bitrix24Client:
    return Bitrix24Client(portal_url=PORTAL, oauth=oauth, requests_per_second=0, retry_wait_scale=0)


def refreshed(n: int, server_endpoint: str = "https://oauth.example/rest/") -> dict[str, Any]:
    """The docs' refresh answer (auto-renewal.md), with distinct tokens, naming the server
    that gave it (as the docs' answer names oauth.bitrix.info)."""
    answer = payload("oauth_refresh_response.json")
    answer.update(
        access_token=f"access-{n}",
        refresh_token=f"refresh-{n}",
        expires=NOW + 3600,
        server_endpoint=server_endpoint,
    )
    return answer


def sent_auth(route: respx.Route) -> list[str]:
    return [dict(parse_qsl(c.request.content.decode()))["auth"] for c in route.calls]


@respx.mock
def test_expired_token_is_refreshed_once_and_the_call_repeated(
    store: TokenStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expired = payload("error_expired_token.json")
    api = respx.post(f"{REST}/scope.json").mock(
        side_effect=[httpx.Response(401, json=expired), httpx.Response(200, json={"result": []})]
    )
    oauth_server = respx.get(TOKEN_URL).mock(return_value=httpx.Response(200, json=refreshed(1)))
    client = client_of(session(store, clock))
    assert client.call("scope")["result"] == []
    assert sent_auth(api) == ["old-access", "access-1"]
    query = dict(oauth_server.calls[0].request.url.params)
    assert query == {
        "grant_type": "refresh_token",
        "client_id": "app.1",
        "client_secret": CLIENT_SECRET,
        "refresh_token": "old-refresh",
    }
    # The new pair is what the next run (another session on the same database) uses.
    assert store.load("portal.example.ru") == TokenPair("access-1", "refresh-1", NOW + 3600)
    assert session(store, clock).token() == "access-1"
    assert client.token_refreshes == 1
    for secret in (CLIENT_SECRET, "old-refresh", "refresh-1", "access-1", "old-access"):
        assert secret not in caplog.text


@respx.mock
def test_a_token_about_to_expire_is_refreshed_before_the_call(
    store: TokenStore, clock: Clock
) -> None:
    store.replace(
        "portal.example.ru",
        TokenPair("stored-access", "stored-refresh", NOW + REFRESH_MARGIN_SEC + 60),
        made_from="",
    )
    api = respx.post(f"{REST}/scope.json").mock(
        return_value=httpx.Response(200, json={"result": []})
    )
    oauth_server = respx.get(TOKEN_URL).mock(return_value=httpx.Response(200, json=refreshed(2)))
    client = client_of(session(store, clock))  # the stored pair wins over the environment's
    client.call("scope")
    clock.now += 61  # now within the margin of the expiry
    client.call("scope")
    assert sent_auth(api) == ["stored-access", "access-2"]
    assert dict(oauth_server.calls[0].request.url.params)["refresh_token"] == "stored-refresh"


@respx.mock
def test_a_lost_race_adopts_the_pair_the_winner_stored(store: TokenStore, clock: Clock) -> None:
    """Two processes refresh the same single-use token: the server refuses the second
    (invalid_grant); it finds the first one's pair in the store and goes on."""
    respx.get(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json=refreshed(3)),
            httpx.Response(400, json=payload("oauth_error_invalid_grant.json")),
        ]
    )
    first, second = session(store, clock), session(store, clock)
    assert first.refresh("old-access") == "access-3"
    assert second.refresh("old-access") == "access-3"
    assert second.refreshes == 0


@respx.mock
def test_a_refused_refresh_is_one_clear_auth_error(store: TokenStore, clock: Clock) -> None:
    respx.post(f"{REST}/scope.json").mock(
        return_value=httpx.Response(401, json=payload("error_expired_token.json"))
    )
    respx.get(TOKEN_URL).mock(
        return_value=httpx.Response(400, json=payload("oauth_error_invalid_grant.json"))
    )
    with pytest.raises(
        Bitrix24AuthError, match="refresh token was used already or revoked"
    ) as info:
        client_of(session(store, clock)).call("scope")
    assert info.value.code == "invalid_grant"
    assert "old-refresh" not in str(info.value) and CLIENT_SECRET not in str(info.value)


@respx.mock
def test_a_wrong_client_id_answered_with_200_is_refused(clock: Clock) -> None:
    respx.get(TOKEN_URL).mock(
        return_value=httpx.Response(200, json=payload("oauth_error_wrong_client.json"))
    )
    with pytest.raises(Bitrix24AuthError, match="check BITRIX24_CLIENT_ID"):
        session(None, clock, access="").token()


@respx.mock
def test_an_expired_token_twice_in_a_row_is_not_refreshed_in_a_loop(clock: Clock) -> None:
    api = respx.post(f"{REST}/scope.json").mock(
        return_value=httpx.Response(401, json=payload("error_expired_token.json"))
    )
    respx.get(TOKEN_URL).mock(return_value=httpx.Response(200, json=refreshed(4)))
    with pytest.raises(Bitrix24AuthError, match="access token expired"):
        client_of(session(None, clock)).call("scope")
    assert api.call_count == 2


@respx.mock
def test_the_next_refresh_goes_to_the_server_the_answer_names(clock: Clock) -> None:
    """East (.ru) and west portals have their own authorization servers: each refresh
    answer's `server_endpoint` says where the next one goes (docs §6; payload _ru)."""
    east = payload("oauth_refresh_response_ru.json")["server_endpoint"]
    assert east == "https://oauth.bitrix24.tech/rest/"
    first = respx.get(TOKEN_URL).mock(return_value=httpx.Response(200, json=refreshed(1, east)))
    second = respx.get("https://oauth.bitrix24.tech/oauth/token/").mock(
        return_value=httpx.Response(200, json=refreshed(2, east))
    )
    oauth = session(None, clock)
    assert oauth.refresh("old-access") == "access-1"
    assert oauth.refresh("access-1") == "access-2"
    assert (first.call_count, second.call_count) == (1, 1)
    assert dict(second.calls[0].request.url.params)["refresh_token"] == "refresh-1"


@respx.mock
def test_a_server_endpoint_that_is_not_https_is_not_followed(clock: Clock) -> None:
    answer = refreshed(1, "http://oauth.evil.example/rest/")
    route = respx.get(TOKEN_URL).mock(
        side_effect=[httpx.Response(200, json=answer), httpx.Response(200, json=refreshed(2))]
    )
    oauth = session(None, clock)
    oauth.refresh("old-access")
    oauth.refresh("access-1")
    assert route.call_count == 2  # both at the configured server
