"""Bitrix24 access as a Dagster resource: configuration in, one shared client out."""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field, PrivateAttr

from calltexts_assets.clients.bitrix24 import DEFAULT_RETRY_WAITS, Bitrix24Client


class Bitrix24Resource(dg.ConfigurableResource):
    """A webhook URL, or an OAuth token with the portal URL (secrets: from dg.EnvVar)."""

    webhook_url: str = ""  # https://portal/rest/<user_id>/<code>/
    oauth_token: str = ""
    portal_url: str = ""  # with oauth_token: https://portal
    requests_per_second: float = 2.0
    retry_waits: list[float] = Field(default_factory=lambda: list(DEFAULT_RETRY_WAITS))
    retry_wait_scale: float = 1.0
    timeout_sec: float = 30.0

    _client: Bitrix24Client | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def get_client(self) -> Bitrix24Client:
        """The one client of this resource instance (shared by the asset's threads)."""
        with self._lock:
            if self._client is None:
                self._client = Bitrix24Client(
                    webhook_url=self.webhook_url,
                    oauth_token=self.oauth_token,
                    portal_url=self.portal_url,
                    requests_per_second=self.requests_per_second,
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
