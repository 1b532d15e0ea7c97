"""Chat completions through the OpenAI API (or a compatible server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from calltexts_assets.clients.openai_base import OpenAIApiError, OpenAIConnection, OpenAIService


class ChatClient(OpenAIService):
    """One request, one answer's text; retries and errors as every OpenAI service here."""

    def __init__(
        self,
        connection: OpenAIConnection,
        *,
        model: str = "gpt-4o-mini",
        temperature: float = 0.2,
        max_tokens: int = 400,
    ) -> None:
        super().__init__(connection)
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens

    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        what: str,
        error: type[OpenAIApiError] = OpenAIApiError,
    ) -> tuple[str, int]:
        """The first choice's text ("" when the model gave none) and the requests spent."""

        def request() -> Any:
            return self.client().chat.completions.create(
                model=self.model,
                messages=list(messages),  # type: ignore[arg-type]
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )

        response, attempts = self.call_with_retry(what, request, error=error)
        content = (response.choices[0].message.content or "") if response.choices else ""
        return content, attempts
