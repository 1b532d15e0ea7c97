"""The OpenAI-backed services as Dagster resources: transcription and chat."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.openai_base import OpenAIConnection, OpenAIService
from calltexts_assets.clients.stt_models import model_profile
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
    # The second opinion for doubtful calls (WHISPER_FALLBACK_*): "" none. Its own server
    # gets its own key (OpenAI's is never sent there) and no proxy (CHATGPT_PROXY_URL is
    # OpenAI's way out).
    fallback_model: str = ""
    fallback_base_url: str = ""  # "" the same server, key and proxy as `model`
    fallback_api_key: str = ""  # secret: from dg.EnvVar

    _fallback: Any = PrivateAttr(default=None)

    def get_client(self) -> WhisperClient:
        return super().get_client()

    def get_fallback_client(self) -> WhisperClient | None:
        if not self.fallback_model:
            return None
        with self._lock:
            if self._fallback is None:
                connection = self.connection()
                if self.fallback_base_url:
                    connection = replace(
                        connection,
                        base_url=self.fallback_base_url,
                        api_key=self.fallback_api_key,
                        proxy_url="",
                    )
                # keywords are gpt-transcribe's alone (settings-checked for WHISPER_MODEL)
                takes_keywords = model_profile(self.fallback_model).language_list
                self._fallback = WhisperClient(
                    connection,
                    model=self.fallback_model,
                    language=self.language,
                    keywords=tuple(self.keywords) if takes_keywords else (),
                    max_file_bytes=int(self.max_upload_mb * 2**20) or None,
                    max_request_sec=self.max_request_sec or None,
                )
            return self._fallback

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        super().teardown_after_execution(context)
        with self._lock:
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None

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
