"""Chat completions through the OpenAI API (or a compatible server)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from calltexts_assets.clients.openai_base import OpenAIApiError, OpenAIConnection, OpenAIService

# OpenAI's reasoning models (o-series, gpt-5 and later, gpt-6-luna the summaries' default)
# refuse `max_tokens` and any temperature but 1 on chat completions, and spend reasoning
# tokens out of `max_completion_tokens` unless `reasoning_effort` is `none`
# (docs/specs/openai_models.md §7).
_REASONING = re.compile(r"^(o\d|gpt-[5-9]|gpt-\d\d)")


def is_reasoning_model(model: str) -> bool:
    return bool(_REASONING.match(model)) and "chat-latest" not in model


class ChatClient(OpenAIService):
    """One request, one answer's text; retries and errors as every OpenAI service here."""

    def __init__(
        self,
        connection: OpenAIConnection,
        *,
        model: str = "gpt-6-luna",
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

        limits: dict[str, Any] = (
            {"max_completion_tokens": self.max_tokens, "reasoning_effort": "none"}
            if is_reasoning_model(self.model)
            else {"temperature": self.temperature, "max_tokens": self.max_tokens}
        )

        def request() -> Any:
            return self.client().chat.completions.create(
                model=self.model,
                messages=list(messages),  # type: ignore[arg-type]
                **limits,
            )

        response, attempts = self.call_with_retry(what, request, error=error)
        content = (response.choices[0].message.content or "") if response.choices else ""
        return content, attempts
