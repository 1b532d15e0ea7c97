"""A deterministic call script: who says which word when, seeded by the call id.

The script is the ground truth of a sandbox call. `tones.py` turns it into audio (one tone
per word) and the STT emulator decodes the audio back into words, so a test can compute
exactly what a correct pipeline must produce from the script alone.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

# Index in this tuple = the tone that carries the word (see tones.py); keep the order
# stable, or rendered sandbox recordings change meaning.
VOCABULARY: tuple[str, ...] = (
    "здравствуйте", "добрый", "день", "меня", "зовут", "компания", "заказ", "доставка",
    "оплата", "счёт", "номер", "адрес", "курьер", "склад", "товар", "цена",
    "скидка", "возврат", "гарантия", "договор", "менеджер", "клиент", "вопрос", "ответ",
    "спасибо", "пожалуйста", "да", "нет", "хорошо", "понятно", "конечно", "сегодня",
    "завтра", "неделя", "время", "утром", "вечером", "удобно", "звонок", "перезвоните",
    "подтверждаю", "отмена", "изменить", "оформить", "получить", "отправить", "проверить",
    "уточнить", "карта", "наличные", "сумма", "рублей", "документы", "почта", "телефон",
    "город", "улица", "дом", "квартира", "офис", "срок", "статус", "посылка", "коробка",
    "размер", "цвет", "модель", "качество", "проблема", "решение", "жалоба", "отзыв",
    "акция", "бонус", "баллы", "подписка", "тариф", "услуга", "оператор", "договорились",
)  # fmt: skip

ROLES: tuple[str, str] = ("operator", "client")
CHANNEL_OF_ROLE: dict[str, int] = {"operator": 0, "client": 1}  # 0 = left, 1 = right

# Timing ranges in seconds. Gaps inside a turn stay well below pauses between turns, so
# a decoder can group words into segments at pauses without knowing the script.
WORD_SEC = (0.40, 0.60)
WORD_GAP_SEC = (0.12, 0.25)
TURN_PAUSE_SEC = (0.80, 1.60)
WORDS_PER_TURN = (3, 12)
LEAD_IN_SEC = (0.3, 1.0)
TAIL_SEC = 0.3  # silence kept before the end of the recording
# Times are whole MP3 frames (576 samples at 16 kHz = 36 ms): the sandbox's MP3s are joined
# from pre-encoded frames (mp3_frames.py), so every word must start and end on a frame.
_QUANTUM = 576 / 16_000


@dataclass(frozen=True)
class Word:
    text: str
    index: int  # position in VOCABULARY
    start: float
    end: float


@dataclass(frozen=True)
class Turn:
    role: str  # "operator" or "client"
    channel: int  # 0 = left, 1 = right (stereo recordings)
    words: tuple[Word, ...]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True)
class CallScript:
    call_id: str
    duration_sec: int
    stereo: bool  # False: both roles are mixed into one channel
    turns: tuple[Turn, ...]

    def words(self, role: str | None = None) -> list[Word]:
        return [w for t in self.turns if role is None or t.role == role for w in t.words]

    def text(self, role: str | None = None) -> str:
        return " ".join(w.text for w in self.words(role))


def _seed(call_id: str) -> int:
    # hashlib, not hash(): str hashes are salted per process.
    return int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")


def _q(value: float) -> float:
    return round(round(value / _QUANTUM) * _QUANTUM, 3)  # 3 decimals: exact multiples of 36 ms


def call_script(call_id: str, duration_sec: int, stereo: bool) -> CallScript:
    """The dialogue of a call: alternating operator/client turns filling `duration_sec`."""
    rng = random.Random(_seed(call_id))
    limit = max(duration_sec - TAIL_SEC, 0.0)
    turns: list[Turn] = []
    t = _q(rng.uniform(*LEAD_IN_SEC))
    role_no = 0
    while True:
        role = ROLES[role_no % 2]
        words: list[Word] = []
        for _ in range(rng.randint(*WORDS_PER_TURN)):
            length = _q(rng.uniform(*WORD_SEC))
            if t + length > limit:
                break
            index = rng.randrange(len(VOCABULARY))
            words.append(Word(VOCABULARY[index], index, t, _q(t + length)))
            t = _q(t + length + rng.uniform(*WORD_GAP_SEC))
        if not words:
            break
        turns.append(Turn(role, CHANNEL_OF_ROLE[role], tuple(words)))
        t = _q(words[-1].end + rng.uniform(*TURN_PAUSE_SEC))
        role_no += 1
    return CallScript(call_id, duration_sec, stereo, tuple(turns))
