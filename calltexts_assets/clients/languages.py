"""One language vocabulary: ISO 639-1 codes (`ru`) in the ledger, the registry and the
transcript header, whatever the STT answered; names only where people read them (the report).

Servers answer differently (docs/specs/stt_wire.md §2.2, §5.4): whisper-1 and whisper.cpp
give Whisper's English name (`russian`), speaches and LocalAI a code (`ru`), gpt-transcribe
`languages: [{"code": "ru"}]`. The names are those of Whisper's language table
(openai/whisper, whisper/tokenizer.py `LANGUAGES` and its aliases).
"""

from __future__ import annotations

from collections.abc import Iterable

UNDETERMINED = "und"  # ISO 639-2 "undetermined": no speech, or no language reported

# Whisper's languages: code and the English name whisper-1 answers with.
_WHISPER = (
    "en english, zh chinese, de german, es spanish, ru russian, ko korean, fr french, "
    "ja japanese, pt portuguese, tr turkish, pl polish, ca catalan, nl dutch, ar arabic, "
    "sv swedish, it italian, id indonesian, hi hindi, fi finnish, vi vietnamese, he hebrew, "
    "uk ukrainian, el greek, ms malay, cs czech, ro romanian, da danish, hu hungarian, "
    "ta tamil, no norwegian, th thai, ur urdu, hr croatian, bg bulgarian, lt lithuanian, "
    "la latin, mi maori, ml malayalam, cy welsh, sk slovak, te telugu, fa persian, "
    "lv latvian, bn bengali, sr serbian, az azerbaijani, sl slovenian, kn kannada, "
    "et estonian, mk macedonian, br breton, eu basque, is icelandic, hy armenian, "
    "ne nepali, mn mongolian, bs bosnian, kk kazakh, sq albanian, sw swahili, gl galician, "
    "mr marathi, pa punjabi, si sinhala, km khmer, sn shona, yo yoruba, so somali, "
    "af afrikaans, oc occitan, ka georgian, be belarusian, tg tajik, sd sindhi, "
    "gu gujarati, am amharic, yi yiddish, lo lao, uz uzbek, fo faroese, ht haitian creole, "
    "ps pashto, tk turkmen, nn nynorsk, mt maltese, sa sanskrit, lb luxembourgish, "
    "my myanmar, bo tibetan, tl tagalog, mg malagasy, as assamese, tt tatar, haw hawaiian, "
    "ln lingala, ha hausa, ba bashkir, jw javanese, su sundanese, yue cantonese"
)
ENGLISH_NAMES: dict[str, str] = dict(
    entry.split(" ", 1) for entry in (e.strip() for e in _WHISPER.split(","))
)
# Other names Whisper accepts for the same languages.
_ALIASES = {
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht",
    "letzeburgesch": "lb", "pushto": "ps", "panjabi": "pa", "moldavian": "ro",
    "moldovan": "ro", "sinhalese": "si", "castilian": "es", "mandarin": "zh",
}  # fmt: skip
_BY_NAME = {name: code for code, name in ENGLISH_NAMES.items()} | _ALIASES
# The report is in Russian: names of the languages a Russian-speaking portal meets.
RUSSIAN_NAMES = {
    "ru": "русский", "en": "английский", "uk": "украинский", "be": "белорусский",
    "kk": "казахский", "uz": "узбекский", "tg": "таджикский", "az": "азербайджанский",
    "hy": "армянский", "ka": "грузинский", "tt": "татарский", "ba": "башкирский",
    "tk": "туркменский", "mn": "монгольский", "de": "немецкий", "fr": "французский",
    "es": "испанский", "it": "итальянский", "tr": "турецкий", "zh": "китайский",
    "pl": "польский", "lv": "латышский", "lt": "литовский", "et": "эстонский",
    "ro": "румынский", "he": "иврит", "ar": "арабский", "fa": "персидский",
    UNDETERMINED: "не определён",
}  # fmt: skip


def iso_code(value: str | None) -> str:
    """The ISO 639-1 code (Whisper's code for the few it names otherwise, e.g. `haw`) of a
    language as a server reports it: a code, a region-tagged code (`ru-RU`) or a name.
    "" when there is nothing or it is no language we know."""
    text = (value or "").strip().lower()
    if not text:
        return ""
    if text in ENGLISH_NAMES or text == UNDETERMINED:
        return text
    if text in _BY_NAME:
        return _BY_NAME[text]
    base = text.replace("_", "-").split("-", 1)[0]
    return base if base in ENGLISH_NAMES else ""


def first_code(values: Iterable[str | None]) -> str:
    """The first of several reported languages that is one we know."""
    for value in values:
        if code := iso_code(value):
            return code
    return ""


def language_name(code: str | None, reader: str = "ru") -> str:
    """The name a reader expects, in the reader's language (`ru` or `en`): Russian where
    known, else Whisper's English name; in English, Whisper's name capitalized; else the code
    itself."""
    text = (code or "").strip().lower()
    if reader == "en":
        english = "undetermined" if text == UNDETERMINED else ENGLISH_NAMES.get(text, "")
        return english.capitalize() or text or "—"
    return RUSSIAN_NAMES.get(text) or ENGLISH_NAMES.get(text) or text or "—"
