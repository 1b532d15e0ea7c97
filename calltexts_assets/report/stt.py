"""The report's speech-to-text figures: what was sent to the STT against the calls' own
length, how the speakers were told apart, what was dropped, and the languages (by name).

A running tally over one pass of the ledger rows, as the rest of the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from calltexts_assets.billing.cost import decode_request_seconds
from calltexts_assets.report.labels import ReportWords
from calltexts_assets.state.ledger import NEEDS_REVIEW, NO_SPEECH, CallRecord, Status

# the order the roles are listed in (their words: report/labels.py HOW_ROLES)
_HOW_ROLES = ("energy", "turns", "per_channel", "diarized", "mono", "none")


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
    fallback_requests: int = 0  # the second opinion's billed requests
    fallback_billed_sec: int = 0  # ...and what they are billed on, in its unit
    roles: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)

    def add(self, record: CallRecord, fallback_billed_sec: int = 0) -> None:
        """`fallback_billed_sec`: the row's second-opinion seconds in its model's unit."""
        if record.status != Status.TRANSCRIBED:
            return
        if record.language:
            self.languages[record.language] += 1
        if record.stt_sent_sec is None:
            return  # a row from before the STT's use was recorded
        self.requests += record.stt_requests or 0
        self.billed_requests += len(decode_request_seconds(record.stt_request_sec) or ())
        fallback = len(decode_request_seconds(record.fallback_request_sec) or ())
        self.billed_requests += fallback
        self.fallback_requests += fallback
        self.fallback_billed_sec += fallback_billed_sec
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

    def rows(self, w: ReportWords) -> tuple[tuple[str, str], ...]:
        sent = w(
            "sent_value",
            minutes=self.sent_sec / 60,
            call_minutes=self.call_sec / 60,
            ratio=self.sent_ratio,
        )
        roles = ", ".join(
            f"{w.roles(key)}: {self.roles[key]}" for key in _HOW_ROLES if self.roles[key]
        )
        languages = ", ".join(
            f"{w.language_name(code)} ({code}): {n}" for code, n in self.languages.most_common()
        )
        return (
            (w("stt_requests"), str(self.requests)),
            (w("billed_requests"), str(self.billed_requests)),
            (w("sent"), sent),
            (w("no_speech"), str(self.no_speech)),
            (w("second_opinions"), f"{self.second_opinions}, {self.second_opinions_kept}"),
            (
                w("fallback_billed"),
                w(
                    "fallback_billed_value",
                    requests=self.fallback_requests,
                    minutes=self.fallback_billed_sec / 60,
                ),
            ),
            (w("needs_review"), str(self.needs_review)),
            (w("roles"), roles or "—"),
            (w("hallucinations"), str(self.hallucinations)),
            (w("languages"), languages or "—"),
        )

    def warnings(self, w: ReportWords) -> list[str]:
        if self.roles["per_channel"]:
            return [w("w_per_channel", n=self.roles["per_channel"])]
        return []

    def recommendations(self, w: ReportWords) -> list[str]:
        if self.roles["none"]:
            return [w("r_no_roles", n=self.roles["none"])]
        return []
