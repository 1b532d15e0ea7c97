"""The OpenAI-backed services as Dagster resources: transcription and chat."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.openai_base import OpenAIConnection, OpenAIService
from calltexts_assets.clients.whisper import WhisperClient


class _OpenAIResource(dg.ConfigurableResource):
    """Connection settings shared by both services; one client per resource instance."""

    api_key: str = ""  # secret: from dg.EnvVar
    base_url: str = "https://api.openai.com/v1"
    timeout_sec: float = 120.0
    proxy_url: str = ""  # CHATGPT_PROXY_URL; may hold credentials (secret)
    retry_waits: list[float] = Field(default_factory=lambda: [10.0, 30.0, 60.0])
    retry_wait_scale: float = 1.0

    _client: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def connection(self) -> OpenAIConnection:
        return OpenAIConnection(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout_sec=self.timeout_sec,
            proxy_url=self.proxy_url,
            retry_waits=tuple(self.retry_waits),
            retry_wait_scale=self.retry_wait_scale,
        )

    def _build(self) -> OpenAIService:
        raise NotImplementedError

    def get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class WhisperResource(_OpenAIResource):
    model: str = "gpt-transcribe"
    language: str = ""  # ISO-639-1 hint ("ru"); empty: the model detects it
    keywords: list[str] = Field(default_factory=list)  # gpt-transcribe's literal terms
    max_upload_mb: float = 0.0  # 0: the model's own limits
    max_request_sec: float = 0.0

    def get_client(self) -> WhisperClient:
        return super().get_client()

    def _build(self) -> WhisperClient:
        return WhisperClient(
            self.connection(),
            model=self.model,
            language=self.language,
            keywords=tuple(self.keywords),
            max_file_bytes=int(self.max_upload_mb * 2**20) or None,
            max_request_sec=self.max_request_sec or None,
        )


class SummariserResource(_OpenAIResource):
    model: str = "gpt-6-luna"
    temperature: float = 0.2
    max_tokens: int = 400

    def get_client(self) -> ChatClient:
        return super().get_client()

    def _build(self) -> ChatClient:
        return ChatClient(
            self.connection(),
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
