"""The sandbox's chat model: a deterministic "summary" of a transcript."""

from __future__ import annotations

import re
from collections import Counter

from calltexts_sandbox.calls.script import VOCABULARY

# Words of every call that say nothing about its subject; left out of sandbox summaries.
STOP_WORDS = frozenset({
    "здравствуйте", "добрый", "день", "меня", "зовут", "да", "нет", "хорошо", "понятно",
    "конечно", "спасибо", "пожалуйста", "оператор", "клиент", "договорились",
})  # fmt: skip


def summary_reply(prompt: str) -> str:
    """A deterministic 'summary': the most frequent content words of the transcript."""
    match = re.search(r"<transcript>(.*?)</transcript>", prompt, re.S)
    text = (match.group(1) if match else prompt).lower()
    vocabulary = set(VOCABULARY) - STOP_WORDS
    counts = Counter(w for w in re.findall(r"[а-яё]+", text) if w in vocabulary)
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    if not top:
        return "Содержательной части в разговоре нет.\n\nТеги: без темы"
    return (
        f"Клиент и оператор обсудили: {', '.join(top[:3])}. "
        f"Чаще всего звучало слово «{top[0]}».\n\n"
        f"Теги: {', '.join(top[:4])}"
    )
