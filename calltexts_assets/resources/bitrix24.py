"""Bitrix24 access as a Dagster resource: configuration in, one shared client out."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, PrivateAttr

from calltexts_assets.clients.bitrix24 import DEFAULT_RETRY_WAITS, Bitrix24Client
from calltexts_assets.clients.bitrix24.oauth import DEFAULT_OAUTH_SERVER, OAuthSession
from calltexts_assets.limits.ratelimit import LOW_RATE_WINDOW_SEC
from calltexts_assets.state.ledger import database_engine
from calltexts_assets.state.shared_limits import SharedRateLimiter
from calltexts_assets.state.token_store import TokenStore


class Bitrix24Resource(dg.ConfigurableResource):
    """A webhook URL, or OAuth (a token, or a refresh token with the application's client id
    and secret) with the portal URL. Secrets come from dg.EnvVar."""

    webhook_url: str = ""  # https://portal/rest/<user_id>/<code>/
    oauth_token: str = ""
    portal_url: str = ""  # with OAuth: https://portal
    oauth_refresh_token: str = ""  # refreshes the access token every hour
    client_id: str = ""
    client_secret: str = ""
    oauth_server: str = DEFAULT_OAUTH_SERVER
    token_store_url: str = ""  # database of the current token pair (the ledger's)
    requests_per_second: float = 2.0
    # Database of the pacing shared by every run (the ledger's; BITRIX24_SHARED_PACING):
    # the portal's limit is per application, not per run. Empty: this process paces alone.
    shared_pacing_url: str = ""
    # Drive downloads wait for the rate too (BITRIX24_PACE_DOWNLOADS): undocumented whether
    # the portal meters them, docs/specs/bitrix24_downloads.md
    pace_downloads: bool = True
    recording_hosts: list[str] = Field(default_factory=list)  # besides the portal
    recording_networks: list[str] = Field(default_factory=list)  # trusted private CIDRs
    allow_private_addresses: bool = False  # only the sandbox, which lives on loopback
    max_recording_mb: float = 1024.0
    download_deadline_sec: float = 600.0
    retry_waits: list[float] = Field(default_factory=lambda: list(DEFAULT_RETRY_WAITS))
    retry_wait_scale: float = 1.0
    timeout_sec: float = 30.0

    _client: Bitrix24Client | None = PrivateAttr(default=None)
    _store: TokenStore | None = PrivateAttr(default=None)
    _pacing: SharedRateLimiter | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _oauth(self) -> OAuthSession | None:
        if not self.oauth_refresh_token:
            return None
        if self.token_store_url:
            self._store = TokenStore.at(self.token_store_url)
        return OAuthSession(
            portal_url=self.portal_url,
            access_token=self.oauth_token,
            refresh_token=self.oauth_refresh_token,
            client_id=self.client_id,
            client_secret=self.client_secret,
            server_url=self.oauth_server,
            store=self._store,
        )

    def _shared_pacing(self) -> SharedRateLimiter | None:
        if not self.shared_pacing_url:
            return None
        portal = urlsplit(self.webhook_url or self.portal_url).hostname or "portal"
        # Low-rate windows shrink with the retry waits, as the client's own limiter's do.
        window = LOW_RATE_WINDOW_SEC * max(self.retry_wait_scale, 1e-3)
        return SharedRateLimiter(
            database_engine(self.shared_pacing_url),
            f"bitrix24:{portal}",
            self.requests_per_second,
            low_rate_window=window,
            low_rate_hold=window,
        )

    def get_client(self) -> Bitrix24Client:
        """The one client of this resource instance (shared by the asset's threads)."""
        with self._lock:
            if self._client is None:
                self._pacing = self._shared_pacing()
                self._client = Bitrix24Client(
                    limiter=self._pacing,
                    webhook_url=self.webhook_url,
                    oauth_token=self.oauth_token,
                    portal_url=self.portal_url,
                    oauth=self._oauth(),
                    requests_per_second=self.requests_per_second,
                    pace_downloads=self.pace_downloads,
                    recording_hosts=self.recording_hosts,
                    recording_networks=self.recording_networks,
                    allow_private_addresses=self.allow_private_addresses,
                    max_recording_bytes=int(self.max_recording_mb * 2**20),
                    download_deadline_sec=self.download_deadline_sec,
                    retry_waits=self.retry_waits,
                    retry_wait_scale=self.retry_wait_scale,
                    timeout_sec=self.timeout_sec,
                )
            return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._store is not None:
                self._store.dispose()
                self._store = None
            if self._pacing is not None:
                self._pacing.engine.dispose()
                self._pacing = None
