"""One call's recording -> a dialogue transcript, with one STT pass per call.

The recording goes to the STT once, as it is (pieces cut in pauses when it is over the
model's limits: `audio/chunks.py`). Roles of a stereo call (Bitrix24: left = operator,
right = client) come from the channels themselves: the recording is decoded here, a block at
a time, into the loudness of each channel (`audio/envelope.py`), and every word the STT
returns is given to the side that was loud over its span (`roles.py`). Nothing is paid
twice. Servers that return no times cannot be given roles that way; for them
`role_mode="turns"` sends each side's turns on their own, in order, the dialogue so far as
the prompt (`turns.py`: only speech is sent, nothing twice), and `role_mode="per_channel"`
each side whole (twice the audio, twice the bill); both are recorded.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.chunks import Limits, Piece, cut_recording
from calltexts_assets.audio.envelope import Envelope, analyse
from calltexts_assets.audio.speech import CallSpeech, call_speech, merge_spans
from calltexts_assets.clients.languages import iso_code
from calltexts_assets.clients.whisper import Segment, SttResult, Word
from calltexts_assets.state.ledger import NO_SPEECH
from calltexts_assets.transcripts.hallucinations import drop_hallucinations
from calltexts_assets.transcripts.lines import DialogueLine, segment_lines, word_lines
from calltexts_assets.transcripts.roles import attribute
from calltexts_assets.transcripts.speech_only import (
    ALL,
    GAP_SEC,
    SEND_MODES,
    SPEECH,
    joined_pieces,
    pack,
    stretches,
    worth_cutting,
)
from calltexts_assets.transcripts.speech_only import PAD_SEC as SPEECH_PAD_SEC
from calltexts_assets.transcripts.turns import PAD_SEC, clips, plan_requests, prompt_before

__all__ = ["DialogueLine", "RequestsInFlight", "SpeechToText", "Transcript", "transcribe_call"]

MONO_ROLE = "speaker"
# How a transcript's lines got their speakers (the ledger's `role_mode`); the first three
# are also the settings' STT_ROLE_MODE.
BY_ENERGY, TURNS, PER_CHANNEL, NO_ROLES = "energy", "turns", "per_channel", "none"
DIARIZED, MONO = "diarized", "mono"
ROLE_MODES = (BY_ENERGY, TURNS, PER_CHANNEL, NO_ROLES)
LOGPROB_FLOOR = -1.0  # "lower than -1, consider the logprobs failed" (stt_wire §2.3)
# Decoding is CPU-bound: more decodes at once than cores gain nothing. Memory needs no
# bound of its own any more: a decode holds one block (audio.decode.BLOCK_SEC) at a time.
_DECODE_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 2)


@contextmanager
def decode_slot() -> Iterator[None]:
    with _DECODE_SLOTS:
        yield


class SpeechToText(Protocol):
    """What transcription needs of WhisperClient (tests may pass a stand-in)."""

    model: str
    language: str
    max_file_bytes: int
    max_request_sec: float

    def transcribe_file(
        self, path: str | Path, duration_sec: float | None = None, *, prompt: str = ""
    ) -> SttResult: ...


class SharedLimit(Protocol):
    """A limit shared with other runs (`state.shared_limits.SharedSlots`): a slot held while
    one request is in flight."""

    def slot(self) -> AbstractContextManager[None]: ...


class RequestsInFlight:
    """A SpeechToText that has at most `limit` requests in flight at once. Given more workers
    than that, the others decode their next call meanwhile, so that the STT is never left
    waiting on a decode while the concurrency setting still bounds what it is sent.

    With `shared`, each request also holds a slot of the account's limit across all runs;
    this run's own bound is taken first, so its waiting workers never hold shared slots."""

    def __init__(self, stt: SpeechToText, limit: int, shared: SharedLimit | None = None) -> None:
        self._stt = stt
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._shared = shared
        self.model = stt.model
        self.language = stt.language
        self.max_file_bytes = stt.max_file_bytes
        self.max_request_sec = stt.max_request_sec

    def sharing_with(self, stt: SpeechToText) -> RequestsInFlight:
        """`stt` within the same bounds as this one (a second model on the same server): the
        two together have at most `limit` requests in flight."""
        other = RequestsInFlight(stt, 1, self._shared)
        other._slots = self._slots
        return other

    def transcribe_file(
        self, path: str | Path, duration_sec: float | None = None, *, prompt: str = ""
    ) -> SttResult:
        with self._slots, self._shared.slot() if self._shared else nullcontext():
            if prompt:  # only the turns mode has one (a stand-in need not take it)
                return self._stt.transcribe_file(path, duration_sec, prompt=prompt)
            return self._stt.transcribe_file(path, duration_sec)


@dataclass(frozen=True)
class Transcript:
    language: str  # ISO 639-1, "" when the STT reported none (no speech sent)
    duration_sec: float  # the recording's length from its headers (MP3: LAME delay/padding out)
    lines: tuple[DialogueLine, ...]
    model: str
    requests: int  # STT requests spent on the call, retries included
    pieces: int = 0  # files answered (silent pieces are not sent)
    roles: str = MONO  # how the lines got their speakers (BY_ENERGY, PER_CHANNEL, ...)
    sent_sec: float = 0.0  # audio sent to the STT (both sides in per-channel mode)
    billed_sec: tuple[float, ...] = ()  # per answered request: what the service bills
    hallucinations: int = 0  # segments dropped and phrases removed
    # what the STT said it heard, where it differs from what was sent ("" when it matches)
    duration_mismatch: str = ""
    verdict: str = ""  # NO_SPEECH, or "" for a call with speech
    # seconds the voice activity detector calls speech (any channel); None: not run
    speech_sec: float | None = None
    # Signs of doubt (`second_opinion.py`): the share of Whisper-style segment time with
    # avg_logprob below -1 (None: the model gives none), and the detector's speech with no
    # line over it (None: the detector did not run)
    low_logprob_share: float | None = None
    unheard_sec: float | None = None
    doubts: tuple[str, ...] = ()  # the signals of the first answer (second_opinion.SIGNALS)
    # The second opinion, when one was asked: its model, what its requests are billed on
    # (at its own tariff), and whether its answer was kept (then `model` is it)
    fallback_model: str = ""
    fallback_billed_sec: tuple[float, ...] = ()
    first_model: str = ""  # whose requests `billed_sec` are, when a fallback was asked
    fallback_kept: bool = False
    # What the STT answered, per piece sent: where the piece lies and the body as it came
    # (`transcripts/answers.py` keeps it beside the recording).
    answers: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)
    # the answers not kept (the other model's), kept for the record
    other_answers: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def words(self, speaker: str | None = None) -> list[str]:
        return [
            w for line in self.lines if speaker in (None, line.speaker) for w in line.text.split()
        ]


# MP3 encoder padding and Bitrix24's whole seconds make small differences normal; a recording
# that decodes to much less than its header announces is damaged (zeroed or cut frames).
_LENGTH_TOLERANCE = 0.9
_LENGTH_SLACK_SEC = 1.0


def check_decoded_length(decoded_sec: float, header_sec: float) -> None:
    """Raise AudioError when the audio is much shorter than its header says."""
    if decoded_sec < header_sec * _LENGTH_TOLERANCE - _LENGTH_SLACK_SEC:
        raise audio.AudioError(
            f"corrupt recording: its frames decode to {decoded_sec:.1f} s of the "
            f"{header_sec:.1f} s its header announces"
        )


# What the STT says it heard (`duration`, `usage.seconds`) may differ from what was sent by
# its rounding (usage.seconds is whole seconds, rounded up) and by decoders' MP3 timelines
# (33 ms, docs/specs/audio_formats.md §2); beyond this it heard something else, or misreports.
_HEARD_SLACK_SEC = 2.0
_HEARD_SLACK_FRACTION = 0.01
DURATION_MISMATCH = "stt_duration_mismatch"


def heard_mismatch(sent_sec: float, result: SttResult) -> str:
    """ "" when what the STT reports hearing matches the audio sent, else what differs."""
    slack = max(_HEARD_SLACK_SEC, _HEARD_SLACK_FRACTION * sent_sec)
    reported = {"duration": result.duration, "usage.seconds": result.billed_seconds}
    wrong = [
        f"{name} {value:g} s" for name, value in reported.items()
        if value is not None and abs(value - sent_sec) > slack
    ]  # fmt: skip
    return f"sent {sent_sec:.1f} s, the STT answered {' and '.join(wrong)}" if wrong else ""


@dataclass
class _Answers:
    """What the STT answered for one call, piece by piece: the lines made of each answer as
    it comes (its words are not kept: a call of hours holds one piece's words at a time),
    and what the requests cost."""

    lines: list[DialogueLine] = field(default_factory=list)
    requests: int = 0
    pieces: int = 0
    sent_sec: float = 0.0
    billed_sec: list[float] = field(default_factory=list)
    untimed: bool = False  # some answer had no times (json)
    diarized: bool = False
    hallucinations: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    languages_reported: bool = False  # a model that detects languages answered (maybe [])
    mismatches: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    # seconds of kept segments that carry avg_logprob, and of those below the floor
    logprob_sec: float = 0.0
    low_logprob_sec: float = 0.0

    def judge(self, segments: Sequence[Segment]) -> None:
        for s in segments:
            if s.avg_logprob is not None:
                self.logprob_sec += s.end - s.start
                self.low_logprob_sec += (s.end - s.start) * (s.avg_logprob < LOGPROB_FLOOR)

    @property
    def low_logprob_share(self) -> float | None:
        return self.low_logprob_sec / self.logprob_sec if self.logprob_sec else None

    def count(self, piece: Piece, result: SttResult) -> None:
        self.bodies.append(
            {
                "offset": piece.offset,
                "start": piece.start,
                "duration": piece.duration,
                "channel": piece.channel,
                "joins": [list(join) for join in piece.joins],
                "attempts": result.attempts,
                "response_format": result.response_format,
                "body": result.body,
            }
        )
        self.requests += result.attempts
        self.pieces += 1
        self.sent_sec += piece.duration
        billed = result.billed_seconds
        mismatch = heard_mismatch(piece.duration, result)
        if mismatch:  # billed on what was sent, never on what it claims
            self.mismatches.append(f"{piece.path.name}: {mismatch}")
            billed = None
        self.billed_sec.append(billed if billed is not None else piece.duration)
        self.untimed = self.untimed or not result.timed
        if result.language and result.segments:
            self.languages[result.language] += len(result.segments)
        self.languages_reported = self.languages_reported or result.languages_reported

    @property
    def language(self) -> str:
        return self.languages.most_common(1)[0][0] if self.languages else ""


@dataclass(frozen=True)
class _Roles:
    """How one call's lines get their speakers."""

    envelope: Envelope
    stereo: bool
    role_mode: str
    stereo_roles: Sequence[str]
    mono_role: str
    speech: CallSpeech | None = None  # the detector's speech per channel, where it ran

    def no_speech(self, start: float, end: float, channel: int | None) -> bool:
        """The detector heard no speech in the span (on `channel`, else on any)."""
        if self.speech is None:
            return False
        sides = (
            self.speech.channels if channel is None else self.speech.channels[channel : channel + 1]
        )
        return not any(a < end and b > start for side in sides for a, b in side)

    def how(self, answers: _Answers) -> str:
        if self.stereo and self.role_mode in (PER_CHANNEL, TURNS):
            return self.role_mode
        if self.stereo:
            return BY_ENERGY if self.role_mode == BY_ENERGY and not answers.untimed else NO_ROLES
        return DIARIZED if answers.diarized else MONO


def _on_the_recording(piece: Piece, result: SttResult) -> tuple[list[Segment], list[Word]]:
    """The answer's segments and words shifted to the recording's timeline; those of a cut's
    lead-in frames (the previous piece's end, silenced) are left to that piece."""

    def own(item: Segment | Word) -> bool:
        return (item.start + item.end) / 2 + piece.offset >= piece.start - 0.05

    at = piece.to_recording  # a shift, or the joins of stretches of speech
    segments = [replace(s, start=at(s.start), end=at(s.end)) for s in result.segments if own(s)]
    words = [replace(w, start=at(w.start), end=at(w.end)) for w in result.words if own(w)]
    return sorted(segments, key=lambda s: (s.start, s.end)), sorted(
        words, key=lambda w: (w.start, w.end)
    )


def _piece_lines(piece: Piece, result: SttResult, roles: _Roles, answers: _Answers) -> None:
    """One answer as dialogue lines, its hallucinations dropped."""
    segments, words = _on_the_recording(piece, result)
    env, channel = roles.envelope, piece.channel

    def quiet(start: float, end: float) -> bool:
        """No speech in the span, on the piece's channel (every channel when it has all):
        nothing above the level floor, or nothing the voice activity detector calls speech
        (Whisper's text over hold music or line noise)."""
        if roles.no_speech(start, end, channel):
            return True
        return env.silent(start, end) if channel is None else not env.speech(start, end)[channel]

    # A json answer's one segment spans the piece: no times to judge silence by.
    kept = drop_hallucinations(segments, quiet=quiet if result.timed else None)
    answers.hallucinations += kept.dropped
    segments = list(kept.segments)
    answers.judge(segments)
    if channel is not None:  # per-channel mode: the side is the channel
        answers.lines += segment_lines(segments, [roles.stereo_roles[channel]] * len(segments))
    elif roles.stereo and roles.role_mode == BY_ENERGY and result.timed:
        segment_roles = attribute(segments, env, roles.stereo_roles)
        if words:
            word_roles = attribute(words, env, roles.stereo_roles)
            answers.lines += word_lines(segments, segment_roles, words, word_roles)
        else:  # segment times only: each segment goes to one side as a whole
            answers.lines += segment_lines(segments, segment_roles)
    elif not roles.stereo and any(s.speaker for s in segments):
        answers.diarized = True
        mono = roles.mono_role
        labels = [f"{mono}:{s.speaker}{piece.label}" if s.speaker else mono for s in segments]
        answers.lines += segment_lines(segments, labels)
    else:
        answers.lines += segment_lines(segments, [roles.mono_role] * len(segments))


def _send(pieces: Sequence[Piece], stt: SpeechToText, roles: _Roles, answers: _Answers) -> None:
    for piece in pieces:
        if not piece.silent:  # a muted side or a silent stretch: nothing to pay for
            result = stt.transcribe_file(piece.path, piece.duration)
            answers.count(piece, result)
            _piece_lines(piece, result, roles, answers)


def _send_turns(
    path: Path, info: audio.AudioInfo, stt: SpeechToText, roles: _Roles, answers: _Answers,
    tmp: Path,
) -> CallSpeech:  # fmt: skip
    """Each side's turns as requests of their own, in order, the dialogue so far as prompt:
    the voice activity detector finds each channel's speech (`audio/speech.py`), and each
    request's clip is cut from its own channel (16 kHz mono FLAC, never the whole call)."""
    with decode_slot():
        speech = call_speech(path, info, pad_sec=PAD_SEC)
    groups = plan_requests(speech.channels[:2], max_request_sec=stt.max_request_sec)
    for group, clip in clips(path, info, groups, tmp):
        piece = Piece(clip, group.start, group.start, group.end, False, channel=group.side)
        prompt = prompt_before([line.text for line in answers.lines])
        result = stt.transcribe_file(clip, group.duration, prompt=prompt)
        answers.count(piece, result)
        _piece_lines(piece, result, roles, answers)
        clip.unlink()
    return speech


def _unheard(speech: CallSpeech, lines: Sequence[DialogueLine]) -> float:
    """Seconds of the detector's speech (any channel, stretches merged) that no line is over."""
    merged = merge_spans([span for side in speech.channels for span in side])
    spans = [(line.start, line.end) for line in lines]
    unheard = sum(
        b - a for a, b in merged if not any(start < b and end > a for start, end in spans)
    )
    return round(unheard, 3)


def transcribe_call(
    audio_path: str | Path,
    stt: SpeechToText,
    *,
    role_mode: str = BY_ENERGY,
    stereo_roles: Sequence[str] = ("operator", "client"),
    mono_role: str = MONO_ROLE,
    workdir: str | Path | None = None,
    send: str = ALL,
) -> Transcript:
    """Transcribe one recording; raises TranscriptionError / AudioError on failure.
    `send`: SPEECH sends only the stretches the voice activity detector calls speech
    (`speech_only.py`), ALL the recording whole (the turns mode sends speech either way)."""
    if role_mode not in ROLE_MODES:
        raise ValueError(f"role_mode must be one of {ROLE_MODES}, got {role_mode!r}")
    if send not in SEND_MODES:
        raise ValueError(f"send must be one of {SEND_MODES}, got {send!r}")
    path = Path(audio_path)
    info = audio.probe(path)
    with decode_slot():
        envelope = analyse(path, info)
    check_decoded_length(envelope.duration_sec, info.duration_sec)
    stereo = envelope.channels >= 2 and not envelope.identical_channels
    speech: CallSpeech | None = None
    if send == SPEECH and not envelope.silent() and not (stereo and role_mode == TURNS):
        with decode_slot():
            speech = call_speech(path, info, min_silence_sec=GAP_SEC, pad_sec=SPEECH_PAD_SEC)
    roles = _Roles(envelope, stereo, role_mode, stereo_roles, mono_role, speech)
    answers = _Answers()
    # a silent recording, or one in which the detector finds no speech, costs no request
    no_speech = envelope.silent() or (speech is not None and not speech.has_speech)
    if not no_speech:
        limits = Limits(stt.max_file_bytes, stt.max_request_sec)
        with tempfile.TemporaryDirectory(prefix="calltexts-pieces-", dir=workdir) as tmp:
            channels: Sequence[int | None] = [None]
            if stereo and role_mode == TURNS:
                speech = _send_turns(path, info, stt, roles, answers, Path(tmp))
                no_speech = not speech.has_speech
                channels = []
            elif stereo and role_mode == PER_CHANNEL:
                channels = range(2)
            for channel in channels:
                if channel is not None and not envelope.speech()[channel]:
                    continue  # a muted side of the line is not sent
                stem = "piece" if channel is None else stereo_roles[channel]
                kept = stretches(speech, channel) if speech is not None else None
                if kept is not None and not kept:
                    continue  # the detector hears nobody on this side
                if kept is not None and worth_cutting(kept, info.duration_sec):
                    groups = pack(kept, limits, envelope.pause_near)
                    pieces = joined_pieces(
                        path, info, groups, Path(tmp), channel=channel, stem=stem
                    )
                else:
                    pieces = cut_recording(
                        path, info, envelope, limits, Path(tmp), channel=channel, stem=stem
                    )
                _send(pieces, stt, roles, answers)
    lines = answers.lines
    billed = answers.billed_sec
    if roles.how(answers) == TURNS and billed:
        # Priced by audio duration (openai_models.md §4): a call's turns are billed as the
        # sum of their seconds, not a started minute each.
        billed = [sum(billed)]
    order = {speaker: i for i, speaker in enumerate((*stereo_roles, mono_role))}
    lines.sort(key=lambda line: (line.start, order.get(line.speaker, len(order))))
    return Transcript(
        # The hint stands in for a server that names no language, once speech was sent; not
        # for one that said it could not tell (gpt-transcribe's `languages: []`).
        language=answers.language
        or (iso_code(stt.language) if answers.pieces and not answers.languages_reported else ""),
        duration_sec=info.duration_sec,
        lines=tuple(lines),
        model=stt.model,
        requests=answers.requests,
        pieces=answers.pieces,
        roles=roles.how(answers),
        sent_sec=answers.sent_sec,
        billed_sec=tuple(billed),
        hallucinations=answers.hallucinations,
        duration_mismatch="; ".join(answers.mismatches),
        verdict=NO_SPEECH if no_speech and not answers.pieces else "",
        speech_sec=None if speech is None else round(speech.speech_sec(), 3),
        low_logprob_share=answers.low_logprob_share,
        unheard_sec=None if speech is None else _unheard(speech, lines),
        answers=tuple(answers.bodies),
    )
