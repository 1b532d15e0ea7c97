"""OAuth access tokens that outlive their hour: refreshed with the refresh token, the new
pair kept in the token store (docs/specs/bitrix24_wire.md §6).

A refresh happens shortly before the announced expiry and after an `expired_token`
answer. Refresh tokens are single-use, so concurrent refreshers lose with `invalid_grant`:
the loser re-reads the store, where the winner left the new pair, before it gives up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from calltexts_assets.clients.bitrix24.errors import Bitrix24AuthError, TransientError
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.runlog.masking import mask_text
from calltexts_assets.state.token_store import TokenPair, TokenStore

log = scrubbed_logger(__name__)

DEFAULT_OAUTH_SERVER = "https://oauth.bitrix.info"  # the EN docs; RU: oauth.bitrix24.tech
# Refresh this long before the announced expiry (a tenth of the lifetime when that is
# shorter): early enough that no call meets an expired token, rarely enough that the portal
# never sees a refresh per request (the docs warn against that).
REFRESH_MARGIN_SEC = 300.0
# Waits before re-reading the store after `invalid_grant`: the process that won the race
# stores its new pair right after its answer, within these ~7 s.
STORE_REREADS = (0.5, 1.0, 2.0, 4.0)
_CLIENT_ERRORS = frozenset({"invalid_client", "wrong_client"})


class OAuthSession:
    """The current access token of one portal; thread-safe, one refresh at a time."""

    def __init__(
        self,
        *,
        portal_url: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        access_token: str = "",
        server_url: str = DEFAULT_OAUTH_SERVER,
        store: TokenStore | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (refresh_token and client_id and client_secret):
            raise ValueError("an OAuth refresh needs the refresh token, client id and secret")
        self.portal = urlsplit(portal_url).hostname or portal_url
        self.token_url = server_url.rstrip("/") + "/oauth/token/"
        self._client_id, self._client_secret = client_id, client_secret
        self._store = store
        self._http = http or httpx.Client(timeout=30.0)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        # A stored pair is newer than the environment's: each refresh replaced it.
        stored = store.load(self.portal) if store else None
        self._pair = stored or TokenPair(access_token, refresh_token)
        self._seen = {access_token, refresh_token, client_secret, *self._tokens(self._pair)}
        self.refreshes = 0
        self._margin = REFRESH_MARGIN_SEC

    @staticmethod
    def _tokens(pair: TokenPair) -> tuple[str, str]:
        return pair.access_token, pair.refresh_token

    def secrets(self) -> list[str]:
        """Every token and secret this session has held, for masking."""
        with self._lock:
            return [s for s in self._seen if s]

    def token(self) -> str:
        """The access token to send now: refreshed first when it is about to expire."""
        with self._lock:
            pair = self._pair
        expiring = (
            pair.expires_at is not None and pair.expires_at - self._clock() < REFRESH_MARGIN_SEC
        )
        if not pair.access_token or expiring:
            return self.refresh(pair.access_token)
        return pair.access_token

    def refresh(self, stale: str) -> str:
        """A new access token in place of `stale` (unless another thread or process has
        already replaced it: then that one)."""
        with self._lock:
            if self._pair.access_token != stale:
                return self._pair.access_token
            stored = self._newer_stored()
            if stored is None:
                stored = self._refreshed(self._pair.refresh_token)
            self._pair = stored
            self._seen.update(self._tokens(stored))
            return stored.access_token

    def _newer_stored(self) -> TokenPair | None:
        if self._store is None:
            return None
        stored = self._store.load(self.portal)
        if stored is None or stored.refresh_token == self._pair.refresh_token:
            return None
        if stored.expires_at is not None and stored.expires_at - self._clock() < self._margin:
            return None  # someone else's pair, but as old as ours: refresh it ourselves
        log.info("Bitrix24 OAuth: using the token pair another process stored")
        return stored

    def _refreshed(self, refresh_token: str) -> TokenPair:
        params = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }
        try:
            response = self._http.get(self.token_url, params=params)
        except httpx.TransportError as exc:
            raise TransientError(
                self._masked(f"OAuth server unreachable: {type(exc).__name__}: {exc}"),
                code="oauth_connect_error",
            ) from None
        answer = _json(response)
        if response.status_code >= 500 or answer is None:
            raise TransientError(
                f"OAuth server answered HTTP {response.status_code}", code="oauth_unavailable"
            )
        if answer.get("access_token") and answer.get("refresh_token"):
            return self._keep(answer, made_from=refresh_token)
        error = str(answer.get("error") or f"http_{response.status_code}")
        if error == "invalid_grant":
            for wait in STORE_REREADS:
                self._sleep(wait)
                stored = self._newer_stored()
                if stored is not None:
                    return stored
        raise Bitrix24AuthError(
            self._masked(_refused(error, str(answer.get("error_description") or ""))),
            method="oauth/token",
            code=error[:64],
            status=response.status_code,
        )

    def _keep(self, answer: dict[str, Any], *, made_from: str) -> TokenPair:
        expires = _number(answer.get("expires"))
        expires_in = _number(answer.get("expires_in"))
        if expires is None and expires_in is not None:
            expires = self._clock() + expires_in
        if expires_in:
            self._margin = min(REFRESH_MARGIN_SEC, expires_in / 10)
        pair = TokenPair(str(answer["access_token"]), str(answer["refresh_token"]), expires)
        self._follow(answer.get("server_endpoint"))
        self._seen.update(self._tokens(pair))
        if self._store is not None and not self._store.replace(
            self.portal, pair, made_from=made_from
        ):
            log.warning("Bitrix24 OAuth: another process stored a token pair first; keeping ours")
        self.refreshes += 1
        log.info("Bitrix24 OAuth access token refreshed (valid %s s)", expires_in or "?")
        return pair

    def _follow(self, server_endpoint: Any) -> None:
        """Refresh next time at the authorization server the answer names: east (.ru) and
        west portals have their own (docs/specs/bitrix24_wire.md §6, the PHP SDK reads it
        too). Only an https address (or the scheme already in use), never a path of ours."""
        parts = urlsplit(str(server_endpoint or ""))
        current = urlsplit(self.token_url)
        if not parts.hostname or parts.scheme not in {"https", current.scheme}:
            return
        token_url = f"{parts.scheme}://{parts.netloc}/oauth/token/"
        if token_url != self.token_url:
            log.info("Bitrix24 OAuth: the next refresh goes to %s", parts.netloc)
            self.token_url = token_url

    def _masked(self, text: str) -> str:
        return mask_text(text, self._seen)


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _refused(error: str, description: str) -> str:
    detail = f"{error}{': ' + description if description else ''}"
    if error == "invalid_grant":
        return (
            f"OAuth refresh refused ({detail}): the refresh token was used already or revoked; "
            "re-install or re-authorize the application and set BITRIX24_OAUTH_REFRESH_TOKEN"
        )
    if error in _CLIENT_ERRORS:
        return (
            f"OAuth refresh refused ({detail}): check BITRIX24_CLIENT_ID and BITRIX24_CLIENT_SECRET"
        )
    return f"OAuth refresh refused ({detail})"
