"""The transcript file: a metadata header, then one `[mm:ss] Role: text` line per line of
the dialogue.

Pure text rendering; callers write the result as UTF-8 without a BOM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from calltexts_assets.clients.languages import UNDETERMINED, language_name
from calltexts_assets.runlog.masking import mask_phone
from calltexts_assets.state.ledger import DIRECTION_WORDS, NO_SPEECH, CallRecord
from calltexts_assets.transcripts.dialogue import Transcript


@dataclass(frozen=True)
class TranscriptHeader:
    call_id: str
    started_at: datetime
    direction: str  # Call.direction: "incoming", "outgoing", ..., "info_call" (listing.calls)
    phone_from: str
    phone_to: str
    duration_sec: float  # as Bitrix24 reports it
    sandbox: bool = False  # synthetic data: say so in the file
    record_id: str = ""  # the recording's Drive file: tells the legs of one call apart
    employee_id: str = ""  # PORTAL_USER_ID
    employee_name: str = ""  # from user.get; "" when the portal did not give it
    line_id: str = ""  # PORTAL_NUMBER
    line_name: str = ""  # from voximplant.line.get
    crm: str = ""  # the CRM card's address, else "TYPE id"

    @classmethod
    def from_record(cls, record: CallRecord, *, sandbox: bool = False) -> TranscriptHeader:
        return cls(
            call_id=record.call_id,
            started_at=datetime.fromisoformat(record.started_at),
            direction=record.direction,
            phone_from=record.phone_from,
            phone_to=record.phone_to,
            duration_sec=record.duration_sec,
            sandbox=sandbox,
            record_id=record.record_id,
            employee_id=record.portal_user_id,
            employee_name=record.employee_name or "",
            line_id=record.portal_number or "",
            line_name=record.line_name or "",
            crm=record.crm_url
            or " ".join(filter(None, (record.crm_entity_type, record.crm_entity_id))),
        )


@dataclass(frozen=True)
class Labels:
    fields: Mapping[str, str]
    roles: Mapping[str, str]
    sandbox: str
    no_speech: str
    no_speech_found: str  # the detector heard no speech: nothing was sent
    seconds: str
    how_roles: Mapping[str, str]  # Transcript.roles -> how the speakers were told apart


LABELS: dict[str, Labels] = {
    "ru": Labels(
        fields={
            "call": "Звонок", "started": "Дата и время", "direction": "Направление",
            "from": "От", "to": "Кому", "duration": "Длительность", "language": "Язык",
            "model": "Модель", "roles": "Роли", "dropped": "Отброшено как галлюцинации STT",
            "source": "Источник", "recording": "Запись (файл Диска)",
            "employee": "Сотрудник", "line": "Линия", "crm": "CRM",
        },
        roles={"operator": "Оператор", "client": "Клиент", "speaker": "Собеседник"},
        sandbox="песочница (синтетические данные)",
        no_speech="(речь не распознана)",
        no_speech_found="(речи в записи нет: детектор речи её не нашёл, в STT не отправлялось)",
        seconds="с",
        how_roles={
            "energy": "по каналам записи (громкость каждого слова)",
            "turns": "по очереди реплик каждого канала",
            "per_channel": "каждый канал распознан отдельно",
            "diarized": "разделение говорящих моделью STT",
            "mono": "одноканальная запись",
            "none": "не определены",
        },
    ),
    "en": Labels(
        fields={
            "call": "Call", "started": "Date and time", "direction": "Direction",
            "from": "From", "to": "To", "duration": "Duration", "language": "Language",
            "model": "Model", "roles": "Roles", "dropped": "Dropped as STT hallucinations",
            "source": "Source", "recording": "Recording (Drive file)",
            "employee": "Employee", "line": "Line", "crm": "CRM",
        },
        roles={"operator": "Operator", "client": "Client", "speaker": "Speaker"},
        sandbox="sandbox (synthetic data)",
        no_speech="(no speech recognised)",
        no_speech_found="(no speech in the recording: the speech detector found none; "
        "nothing was sent to the STT)",
        seconds="s",
        how_roles={
            "energy": "by recording channel (loudness of each word)",
            "turns": "by each channel's turns",
            "per_channel": "each channel transcribed on its own",
            "diarized": "speakers told apart by the STT model",
            "mono": "single-channel recording",
            "none": "not determined",
        },
    ),
}  # fmt: skip


def _language(code: str, reader: str) -> str:
    """ "русский (ru)": the name for the reader, the ISO code as the registry has it."""
    return f"{language_name(code, reader)} ({code})"


def timestamp(seconds: float) -> str:
    """`[mm:ss]`, or `[h:mm:ss]` from the first hour on."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"[{hours}:{minutes:02d}:{secs:02d}]" if hours else f"[{minutes:02d}:{secs:02d}]"


def _duration(seconds: float, unit: str) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d} ({total} {unit})"


# Line breaks of every kind (CR, LF, VT, FF, NEL, U+2028/9) and other control characters.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: object) -> str:
    """`value` as a single line: a CR/LF inside a phone number or a recognised phrase must
    not forge a header field or a dialogue line."""
    return " ".join(_BREAKS.sub(" ", str(value)).split())


def named(name: str, key: str) -> str:
    """ "Анна Смирнова (7)"; the id alone without a name; "" without either."""
    return f"{name} ({key})" if name and key else name or key


def render_transcript(
    meta: TranscriptHeader,
    transcript: Transcript,
    *,
    labels: str = "ru",
    mask_phones: bool = False,
    role_labels: Mapping[str, str] | None = None,
) -> str:
    """The transcript file's text. `labels` is "ru" or "en"; `role_labels` overrides roles."""
    words = LABELS[labels]
    roles = {**words.roles, **(role_labels or {})}

    def speaker(key: str) -> str:  # "speaker:A" (a diarized voice): "Собеседник A"
        role, _, voice = key.partition(":")
        return f"{roles.get(role, role)} {voice}" if voice else roles.get(key, key)

    def phone(number: str) -> str:
        return (mask_phone(number) if mask_phones else number) or "—"

    f = words.fields
    header = [
        (f["call"], meta.call_id),
        (f["started"], meta.started_at.isoformat(sep=" ")),
        (f["direction"], DIRECTION_WORDS[labels].get(meta.direction, meta.direction)),
        (f["from"], phone(meta.phone_from)),
        (f["to"], phone(meta.phone_to)),
        (f["duration"], _duration(meta.duration_sec, words.seconds)),
        (f["language"], _language(transcript.language or UNDETERMINED, labels)),
        (f["model"], transcript.model or "—"),
        (f["roles"], words.how_roles.get(transcript.roles, transcript.roles)),
        (f["dropped"], str(transcript.hallucinations)),
    ]
    who = [
        (f["employee"], named(meta.employee_name, meta.employee_id)),
        (f["line"], named(meta.line_name, meta.line_id and phone(meta.line_id))),
        (f["crm"], meta.crm),
    ]
    header[5:5] = [(key, value) for key, value in who if value]
    if meta.record_id:
        header.insert(1, (f["recording"], meta.record_id))
    if meta.sandbox:
        header.append((f["source"], words.sandbox))
    out = [f"{key}: {one_line(value)}" for key, value in header]
    out.append("")
    dialogue = [
        f"{timestamp(line.start)} {speaker(line.speaker)}: {one_line(line.text)}"
        for line in transcript.lines
        if one_line(line.text)
    ]
    out += dialogue or [
        words.no_speech_found if transcript.verdict == NO_SPEECH else words.no_speech
    ]
    return "\n".join(out) + "\n"
