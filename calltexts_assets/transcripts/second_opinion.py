"""A second opinion for doubtful calls (issue #23): the signs that an STT answer is not to be
trusted, and the rule that keeps the better of two answers.

A call's answer is doubtful by the signals its model gives where it gives them, and by
those that work on any model's text:
- `low_logprob`: Whisper-style segments (`avg_logprob`, verbose_json only: whisper-1 and
  compatible servers; docs/specs/stt_wire.md §2.3, §5.4) below -1 ("consider the logprobs
  failed") over more than a third of the segments' time;
- `repetition`: a window of the text compresses (zlib, as Whisper's `compression_ratio`) over
  2.4, Whisper's repetition-loop test (§6.2). Whisper judges a 30 s window; the text is read in
  windows of 75 words (30 s at 2.5 words/s), since a whole call's text compresses better the
  longer it is (ordinary Russian: ~2.0 per window);
- `word_rate`: words per second of what the voice activity detector calls speech outside
  0.5-6 (people say 2-3; a loop or a model that heard little says otherwise), on 10 s of
  speech or more;
- `unheard_speech`: 10 s or more, and a fifth or more, of the detector's speech with no line
  over it;
- `language`: the language detected is not the one expected (`WHISPER_LANGUAGE`).
A doubtful call goes once to the fallback model; the answer with fewer signals is kept (the
first one on a tie), both requests are billed, and a call whose kept answer is still doubtful
is `needs_review`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from calltexts_assets.billing.budget import BudgetReached
from calltexts_assets.clients.languages import UNDETERMINED, iso_code
from calltexts_assets.clients.whisper import TranscriptionError
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state.ledger import NEEDS_REVIEW, NO_SPEECH
from calltexts_assets.transcripts.dialogue import Transcript

log = scrubbed_logger(__name__)

LOW_LOGPROB, REPETITION, WORD_RATE = "low_logprob", "repetition", "word_rate"
UNHEARD_SPEECH, LANGUAGE, FALLBACK_FAILED = "unheard_speech", "language", "fallback_failed"
SIGNALS = (LOW_LOGPROB, REPETITION, WORD_RATE, UNHEARD_SPEECH, LANGUAGE)

LOW_LOGPROB_SHARE = 1 / 3
COMPRESSION_CEILING = 2.4  # stt_wire §6.2
WINDOW_WORDS = 75
WORDS_PER_SEC = (0.5, 6.0)
MIN_SPEECH_SEC = 10.0  # below this a rate says little
UNHEARD_MIN_SEC, UNHEARD_MIN_SHARE = 10.0, 0.2


def compression_ratio(text: str) -> float:
    """Whisper's: UTF-8 bytes / zlib-compressed bytes (whisper/utils.py)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def worst_compression(words: Sequence[str], window: int = WINDOW_WORDS) -> float:
    """The highest ratio over consecutive windows of `window` words."""
    return max(
        (compression_ratio(" ".join(words[i : i + window])) for i in range(0, len(words), window)),
        default=0.0,
    )


def doubts(transcript: Transcript, expected_languages: Iterable[str] = ()) -> tuple[str, ...]:
    """The signals that fire on an answer, in SIGNALS' order; () for a trusted one (and for a
    call without speech, which was never sent)."""
    if transcript.verdict == NO_SPEECH or not transcript.pieces:
        return ()
    found = []
    share = transcript.low_logprob_share
    if share is not None and share > LOW_LOGPROB_SHARE:
        found.append(LOW_LOGPROB)
    words = transcript.words()
    if worst_compression(words) > COMPRESSION_CEILING:
        found.append(REPETITION)
    speech = transcript.speech_sec
    if speech is not None and speech >= MIN_SPEECH_SEC:
        low, high = WORDS_PER_SEC
        if not low <= len(words) / speech <= high:
            found.append(WORD_RATE)
        unheard = transcript.unheard_sec or 0.0
        if unheard >= UNHEARD_MIN_SEC and unheard >= UNHEARD_MIN_SHARE * speech:
            found.append(UNHEARD_SPEECH)
    expected = {iso_code(code) for code in expected_languages if code}
    language = transcript.language
    if expected and language and language != UNDETERMINED and language not in expected:
        found.append(LANGUAGE)
    return tuple(found)


def with_second_opinion(
    first: Transcript,
    ask_fallback: Callable[[Transcript], Transcript] | None,
    *,
    expected_languages: Sequence[str] = (),
) -> Transcript:
    """`first`, or, when it is doubtful and a fallback is configured, the better of it and the
    fallback's answer (fewer signals; `first` on a tie). Both are billed: the result keeps the
    first model (`first_model`) and its billed seconds in `billed_sec`, the fallback's in
    `fallback_billed_sec`, and the requests and seconds sent of both. Still doubtful: verdict
    `needs_review`; so is a call the fallback failed on or the run's budget left unasked."""
    signals = doubts(first, expected_languages)
    if not signals:
        return replace(first, doubts=())
    if ask_fallback is None:
        return replace(first, doubts=signals, verdict=NEEDS_REVIEW)
    try:
        second = ask_fallback(first)
    except (TranscriptionError, BudgetReached) as exc:  # the first is paid for: kept, flagged
        log.warning("second opinion failed, the first answer is kept: %s", exc)
        return replace(first, doubts=(*signals, FALLBACK_FAILED), verdict=NEEDS_REVIEW)
    second_signals = doubts(second, expected_languages)
    kept, kept_signals = (
        (second, second_signals) if len(second_signals) < len(signals) else (first, signals)
    )
    return replace(
        kept,
        requests=first.requests + second.requests,
        pieces=first.pieces + second.pieces,
        sent_sec=first.sent_sec + second.sent_sec,
        billed_sec=first.billed_sec,
        first_model=first.model,
        fallback_model=second.model,
        fallback_billed_sec=second.billed_sec,
        fallback_kept=kept is second,
        doubts=signals,
        verdict=NEEDS_REVIEW if kept_signals else kept.verdict,
        hallucinations=first.hallucinations + second.hallucinations,
        duration_mismatch="; ".join(m for m in (first.duration_mismatch,
                                                 second.duration_mismatch) if m),
        answers=kept.answers,
        other_answers=(first if kept is second else second).answers,
    )  # fmt: skip
