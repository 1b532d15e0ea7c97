"""The summary of one call: the prompt sent to the chat model and its answer read back."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.openai_base import OpenAIApiError

TEMPLATE = "summary_prompt.md.j2"
SYSTEM_PROMPT = "Ты помощник отдела продаж. Пишешь короткие деловые резюме звонков."
_TAGS_LINE = re.compile(r"^\s*[*_`]*(?:теги|tags)\s*[*_`]*\s*:\s*(?P<tags>.*)$", re.I | re.M)


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("calltexts_assets", "templates"),
        undefined=jinja2.ChainableUndefined,  # a meta field left out renders as nothing
        keep_trailing_newline=True,
        autoescape=False,  # a prompt, not HTML
    )


def render_prompt(transcript_text: str, meta: Mapping[str, Any]) -> str:
    return _environment().get_template(TEMPLATE).render(transcript=transcript_text, meta=meta)


def parse_summary(text: str) -> tuple[str, list[str]]:
    """Split the model's answer into the summary and its `Теги:` line (the last one wins)."""
    matches = list(_TAGS_LINE.finditer(text))
    if not matches:
        return text.strip(), []
    last = matches[-1]
    raw = last.group("tags").strip().strip("`*_ ")
    tags = [t.strip().strip("#`*_ .").lower() for t in re.split(r"[,;]", raw)]
    body = (text[: last.start()] + text[last.end() :]).strip()
    return body, [t for t in dict.fromkeys(tags) if t]


class SummaryError(OpenAIApiError):
    """The summary could not be produced (rejected, or retries exhausted)."""


@dataclass(frozen=True)
class Summary:
    markdown: str  # the summary without the tags line
    tags: list[str]
    attempts: int = 1


def summarise(chat: ChatClient, transcript_text: str, meta: Mapping[str, Any]) -> Summary:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_prompt(transcript_text, meta)},
    ]
    call_id = meta.get("call_id", "?")
    content, attempts = chat.complete(
        messages, what=f"summary of call {call_id}", error=SummaryError
    )
    if not content.strip():
        raise SummaryError("empty", f"the model returned no summary for call {call_id}")
    markdown, tags = parse_summary(content)
    return Summary(markdown=markdown, tags=tags, attempts=attempts)
