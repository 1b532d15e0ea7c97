"""The report's speech-to-text figures: what was sent to the STT against the calls' own
length, how the speakers were told apart, what was dropped, and the languages (by name).

A running tally over one pass of the ledger rows, as the rest of the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from calltexts_assets.billing.cost import decode_request_seconds
from calltexts_assets.clients.languages import language_name
from calltexts_assets.state.ledger import CallRecord, Status

NO_SPEECH, NEEDS_REVIEW = "no_speech", "needs_review"  # the ledger's verdict

_HOW_ROLES = (
    ("energy", "по каналам записи (одна отправка)"),
    ("turns", "по репликам каждого канала (только речь)"),
    ("per_channel", "каждый канал отдельно (двойная оплата)"),
    ("diarized", "разделение говорящих моделью STT"),
    ("mono", "одноканальная запись"),
    ("none", "не определены (STT без времени слов)"),
)


@dataclass
class SttTally:
    requests: int = 0  # retries included
    billed_requests: int = 0
    sent_sec: float = 0.0
    call_sec: float = 0.0  # of the transcribed calls with a recorded STT use
    hallucinations: int = 0
    no_speech: int = 0  # calls in which no speech was found: nothing sent, nothing billed
    needs_review: int = 0  # still doubtful after the STT (and its second opinion)
    second_opinions: int = 0  # calls sent once more, to WHISPER_FALLBACK_MODEL
    second_opinions_kept: int = 0
    roles: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)

    def add(self, record: CallRecord) -> None:
        if record.status != Status.TRANSCRIBED:
            return
        if record.language:
            self.languages[record.language] += 1
        if record.stt_sent_sec is None:
            return  # a row from before the STT's use was recorded
        self.requests += record.stt_requests or 0
        self.billed_requests += len(decode_request_seconds(record.stt_request_sec) or ())
        self.billed_requests += len(decode_request_seconds(record.fallback_request_sec) or ())
        self.sent_sec += record.stt_sent_sec
        self.call_sec += record.stt_duration_sec or 0.0
        self.hallucinations += record.hallucinations or 0
        self.no_speech += record.verdict == NO_SPEECH
        self.needs_review += record.verdict == NEEDS_REVIEW
        self.second_opinions += bool(record.fallback_model)
        self.second_opinions_kept += bool(record.fallback_model and record.fallback_kept)
        self.roles[record.role_mode or "mono"] += 1

    @property
    def sent_ratio(self) -> float:
        return self.sent_sec / self.call_sec if self.call_sec else 0.0

    def rows(self) -> tuple[tuple[str, str], ...]:
        sent = (
            f"{self.sent_sec / 60:.1f} мин / {self.call_sec / 60:.1f} мин звонков "
            f"({self.sent_ratio:.2f})"
        )
        roles = ", ".join(
            f"{label}: {self.roles[key]}" for key, label in _HOW_ROLES if self.roles[key]
        )
        languages = ", ".join(
            f"{language_name(code)} ({code}): {n}" for code, n in self.languages.most_common()
        )
        return (
            ("Запросов к STT (с повторами)", str(self.requests)),
            ("Оплачиваемых запросов", str(self.billed_requests)),
            ("Минут отправлено на STT / минут звонков", sent),
            ("Без речи (не отправлены, 0 к оплате)", str(self.no_speech)),
            (
                "Второе мнение (WHISPER_FALLBACK_MODEL), его ответ оставлен",
                f"{self.second_opinions}, {self.second_opinions_kept}",
            ),
            ("Требуют проверки человеком (needs_review)", str(self.needs_review)),
            ("Роли собеседников", roles or "—"),
            ("Отброшено как галлюцинации STT", str(self.hallucinations)),
            ("Языки", languages or "—"),
        )

    def warnings(self) -> list[str]:
        found = []
        if self.roles["per_channel"]:
            found.append(
                f"Звонков, распознанных по каналам отдельно (STT_ROLE_MODE=per_channel): "
                f"{self.roles['per_channel']}. Обе стороны каждого такого звонка отправлены и "
                "оплачены отдельно: их стоимость вдвое выше одной отправки."
            )
        return found

    def recommendations(self) -> list[str]:
        tips = []
        if self.roles["none"]:
            tips.append(
                f"Стереозаписи без ролей, звонков: {self.roles['none']}: сервер STT не вернул "
                "время слов. Выберите STT_ROLE_MODE=turns (реплики каждого канала отдельно, "
                "оплачивается только речь) или модель с временем слов."
            )
        return tips
