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
# Cross-talk (stereo calls): in this share of the turns of MIN_TURN_FOR_BACKCHANNEL words
# or more, the listener says one of BACKCHANNEL_WORDS over a word of the speaker: ~3 % of
# all words overlap another.
BACKCHANNEL_SHARE = 0.3
MIN_TURN_FOR_BACKCHANNEL = 5
BACKCHANNEL_WORDS = ("да", "нет", "хорошо", "понятно", "конечно")
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
    turns: tuple[Turn, ...]  # the dialogue: operator and client in turn, a pause between
    # cross-talk: the listener's one-word turns said over a word of the speaker's
    interjections: tuple[Turn, ...] = ()

    @property
    def all_turns(self) -> list[Turn]:
        return sorted((*self.turns, *self.interjections), key=lambda turn: turn.start)

    def words(self, role: str | None = None) -> list[Word]:
        """The words of `role` (of both when None), in the order they start."""
        found = [w for t in self.all_turns if role is None or t.role == role for w in t.words]
        return sorted(found, key=lambda w: w.start)

    def overlapped(self) -> list[Word]:
        """The words that overlap another word in time (each side of the cross-talk)."""
        words = self.words()
        return [
            w
            for w in words
            if any(o is not w and o.start < w.end and w.start < o.end for o in words)
        ]

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
    # Mixed into one channel, two voices at once would be one tone over another: stereo only.
    interjections = _backchannels(call_id, turns) if stereo else []
    return CallScript(call_id, duration_sec, stereo, tuple(turns), tuple(interjections))


def _backchannels(call_id: str, turns: list[Turn]) -> list[Turn]:
    """Cross-talk: the listener's one-word interjections over a word of the speaker's turn.

    Drawn from a stream of their own, so the dialogue around them is the same as without.
    Placed inside the turn (never over its first or last word), so the listener's own
    turns stay a pause away on their channel."""
    rng = random.Random(_seed(f"crosstalk:{call_id}"))
    added: list[Turn] = []
    for turn in turns:
        words = turn.words
        if len(words) < MIN_TURN_FOR_BACKCHANNEL or rng.random() >= BACKCHANNEL_SHARE:
            continue
        k = rng.randrange(1, len(words) - 2)
        over = words[k]
        start = _q(over.start + rng.uniform(0.05, 0.5) * (over.end - over.start))
        length = _q(rng.uniform(*WORD_SEC))
        choices = [w for w in BACKCHANNEL_WORDS if w not in {over.text, words[k + 1].text}]
        text = rng.choice(choices)
        index = VOCABULARY.index(text)
        listener = ROLES[1 - ROLES.index(turn.role)]
        word = Word(text, index, start, _q(start + length))
        added.append(Turn(listener, CHANNEL_OF_ROLE[listener], (word,)))
    return added
