"""What each transcription model accepts: its response format, its limits per request, and
how it is billed.

Sources: docs/specs/stt_wire.md §1.3-1.4 (formats), §3.1-3.2 (limits), §3.4 (billing).
"""

from __future__ import annotations

from dataclasses import dataclass

# OpenAI refuses a request body over 26,214,400 bytes (25 MiB, the whole multipart body);
# 64 KiB less leaves room for the other form fields (§3.1, [PROBE-A]).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024 - 64 * 1024
# gpt-4o-transcribe and -mini: at most 1,400 s of audio and 2,000 output tokens a request
# (§3.2). A dense Russian call runs ~3.3 words/s at up to ~2.5 tokens a word: ~8 tokens/s,
# so 2,000 tokens last ~250 s. Pieces of 240 s keep such a call whole.
TOKEN_BUDGET_SEC = 240.0
GPT4O_MAX_SEC = 1400.0
# whisper-1 has no length cap of its own (only the 25 MiB). Pieces of at most 30 minutes
# keep one answer's size, and the time one request takes, bounded: a call left open for
# hours becomes a few requests, each of which a timeout can tell from a hang.
LONG_PIECE_SEC = 1800.0
# The seed's slowest STT: 30 s per audio minute. A request's timeout grows by this much
# per second of audio it carries (on top of the connection's own timeout).
SLOWEST_SEC_PER_AUDIO_SEC = 0.5

# The billing unit (billing/cost.py's SECOND / MINUTE). OpenAI prices whisper-1 and
# gpt-transcribe per minute of audio, metered in seconds (usage.seconds, the Usage API's
# `seconds`); the gpt-4o family by tokens, which calltexts prices at the per-minute tariff
# set (OpenAI's own estimate per minute), per second. A compatible server's bill is its own:
# per started minute (the requirements' formula) unless STT_BILLING_UNIT says otherwise.
PER_SECOND, PER_MINUTE = "second", "minute"

VERBOSE = "verbose_json"
JSON = "json"
DIARIZED = "diarized_json"


@dataclass(frozen=True)
class ModelProfile:
    name: str
    response_format: str  # what to ask for first
    max_file_bytes: int
    max_request_sec: float  # audio per request: the model's cap, or its output-token budget
    diarizes: bool = False  # diarized_json: segments carry speaker labels
    known: bool = True  # False: a compatible server's model, its abilities found by asking
    # gpt-transcribe takes the hint as `languages[]` (never with `language`) and `keywords[]`
    # (docs/specs/openai_models.md §3); the others a single `language`.
    language_list: bool = False
    takes_prompt: bool = True  # the diarizing model refuses a prompt (stt_wire §1.2)
    # OpenAI's list price per minute of audio (openai_models.md §4); None: not per minute
    price_per_minute_usd: float | None = None
    billing_unit: str = PER_SECOND
    billed_by_tokens: bool = False  # OpenAI bills tokens; the tariff is a per-minute estimate

    @property
    def timestamps(self) -> bool:
        """Whether answers carry word/segment times (needed to give stereo lines roles)."""
        return self.response_format != JSON


_GPT4O = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
          "gpt-4o-mini-transcribe-2025-03-20")  # fmt: skip
GPT_TRANSCRIBE = "gpt-transcribe"
PROFILES: dict[str, ModelProfile] = {
    "whisper-1": ModelProfile(
        "whisper-1", VERBOSE, MAX_UPLOAD_BYTES, LONG_PIECE_SEC, price_per_minute_usd=0.006
    ),
    **{
        name: ModelProfile(name, JSON, MAX_UPLOAD_BYTES, TOKEN_BUDGET_SEC, billed_by_tokens=True)
        for name in _GPT4O
    },
    # No duration cap was found (an 1,800 s clip answered, stt_wire §3.2) and no output cap
    # is documented: the gpt-4o family's token budget is kept until one is.
    GPT_TRANSCRIBE: ModelProfile(
        GPT_TRANSCRIBE, JSON, MAX_UPLOAD_BYTES, TOKEN_BUDGET_SEC, language_list=True,
        price_per_minute_usd=0.0045,
    ),
    "gpt-4o-transcribe-diarize": ModelProfile(
        "gpt-4o-transcribe-diarize", DIARIZED, MAX_UPLOAD_BYTES, TOKEN_BUDGET_SEC, diarizes=True,
        takes_prompt=False, billed_by_tokens=True,
    ),
}  # fmt: skip
JSON_ONLY_MODELS = frozenset(name for name, p in PROFILES.items() if p.response_format == JSON)


def model_profile(model: str) -> ModelProfile:
    """The profile of a known model; an unknown one (a compatible server's) is asked for
    verbose_json with word and segment times, under OpenAI's upload limit and whisper-1's
    piece length."""
    unknown = ModelProfile(
        model, VERBOSE, MAX_UPLOAD_BYTES, LONG_PIECE_SEC, known=False, billing_unit=PER_MINUTE
    )
    return PROFILES.get(model) or unknown


def billing_unit(model: str, setting: str = "model") -> str:
    """STT_BILLING_UNIT when it names a unit, else the model's own."""
    return setting if setting in (PER_SECOND, PER_MINUTE) else model_profile(model).billing_unit
