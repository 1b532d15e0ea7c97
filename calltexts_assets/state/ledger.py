"""The ledger: what each call of each exported day has gone through.

`call_exports.run_id` / `call_records.run_id` is the export id of one daily partition
(its date, e.g. "2026-11-24"), not a Dagster run id: re-materializing a day, alone or in
a 60-day backfill, updates the same rows instead of adding new ones. The Dagster run that
last touched a row is kept in `dagster_run_id`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


class LedgerUnreadable(RuntimeError):
    """The ledger's file is not a database; the message says which file and what to do."""


class Status:
    """Per-call status. The stage that completed last decides where a re-run resumes."""

    LISTED = "listed"
    NO_RECORDING = "no_recording"  # Bitrix24 has neither a recording link nor a Drive file
    DOWNLOADED = "downloaded"
    MISSING_AUDIO = "missing_audio"  # the recording URL answered 404/410
    DOWNLOAD_ERROR = "download_error"
    TRANSCRIBED = "transcribed"
    TRANSCRIPTION_ERROR = "transcription_error"
    INVALID = "invalid"  # the statistic row itself cannot be exported (e.g. unsafe id)

    ERRORS = frozenset({MISSING_AUDIO, DOWNLOAD_ERROR, TRANSCRIPTION_ERROR, INVALID})


metadata = sa.MetaData()

call_exports = sa.Table(
    "call_exports",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("period_from", sa.String(10), nullable=False),
    sa.Column("period_to", sa.String(10), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("actor", sa.String(128)),
    sa.Column("dagster_run_id", sa.String(64)),
    # The day's listing as call_list last read it (listing.tally.DayFingerprints): a re-run
    # whose listing of the day is the same has nothing new to find on the portal (#26).
    sa.Column("listing_fingerprint", sa.String(64)),
)

# The period's files (registry, report, QA sample) as last written: their sha256, when, and
# the stamp of what they were made from (`Ledger.period_stamp` and the settings that shape
# them), so a re-run can tell they still stand without making them again (#26).
deliverables = sa.Table(
    "deliverables",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),  # "" : left unwritten on purpose
    sa.Column("stamp", sa.String(64), nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
)

call_records = sa.Table(
    "call_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("call_id", sa.String(160), nullable=False),
    sa.Column("record_id", sa.String(160), nullable=False),
    # what Bitrix24 said of the call
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("call_type", sa.Integer, nullable=False),
    sa.Column("direction", sa.String(32), nullable=False),
    sa.Column("phone_from", sa.String(64), nullable=False),
    sa.Column("phone_to", sa.String(64), nullable=False),
    sa.Column("portal_user_id", sa.String(32), nullable=False),
    sa.Column("duration_sec", sa.Integer, nullable=False),
    sa.Column("recording_url", sa.Text),  # without secret parameters (masking.public_url)
    # added later (nullable, see Ledger._add_new_columns)
    sa.Column("stat_id", sa.BigInteger),  # the statistic row: re-read for a fresh link
    sa.Column("recording_url_signed", sa.Boolean),  # the portal's link had secrets
    sa.Column("failed_code", sa.String(32)),  # CALL_FAILED_CODE as given
    sa.Column("telephony_cost", sa.String(32)),  # COST as given
    sa.Column("telephony_currency", sa.String(8)),  # COST_CURRENCY as given
    sa.Column("recording_source", sa.String(16)),  # where the stored copy came from
    # who and where (issue #24): the employee's and the line's names, the CRM binding
    sa.Column("employee_name", sa.String(256)),
    sa.Column("portal_number", sa.String(64)),
    sa.Column("line_name", sa.String(256)),
    sa.Column("crm_entity_type", sa.String(32)),
    sa.Column("crm_entity_id", sa.String(32)),
    sa.Column("crm_url", sa.Text),
    # raw_audio
    sa.Column("audio_path", sa.Text),
    sa.Column("audio_bytes", sa.BigInteger),
    sa.Column("checksum", sa.String(64)),
    sa.Column("audio_duration_sec", sa.Float),
    # when the stored copy was written and hashed: a copy not modified since is trusted
    sa.Column("audio_stored_at", sa.DateTime(timezone=True)),
    # transcripts
    sa.Column("transcript_path", sa.Text),
    sa.Column("language", sa.String(16)),
    sa.Column("model", sa.String(64)),
    sa.Column("stt_duration_sec", sa.Float),
    sa.Column("cost", sa.Float),
    # what was sent to the STT: requests (retries included), audio seconds, the seconds each
    # answered request is billed on (JSON list), how roles were given, hallucinations dropped
    sa.Column("stt_requests", sa.Integer),
    sa.Column("stt_sent_sec", sa.Float),
    sa.Column("stt_request_sec", sa.Text),
    sa.Column("role_mode", sa.String(16)),
    sa.Column("hallucinations", sa.Integer),
    # what the transcript says of the call (issue #23): no_speech, needs_review, or NULL
    sa.Column("verdict", sa.String(16)),
    # the second opinion (issue #23): the first answer's doubt signals (comma separated), the
    # fallback model asked, the seconds each of its requests is billed on, and whether its
    # answer was kept
    sa.Column("doubts", sa.String(128)),
    sa.Column("fallback_model", sa.String(64)),
    sa.Column("fallback_request_sec", sa.Text),
    sa.Column("fallback_kept", sa.Boolean),
    # summaries
    sa.Column("summary_path", sa.Text),
    sa.Column("tags", sa.Text),
    # the deliverables as written: a file missing or changed since is re-made
    sa.Column("transcript_sha256", sa.String(64)),
    sa.Column("summary_sha256", sa.String(64)),
    sa.Column("transcript_written_at", sa.DateTime(timezone=True)),
    sa.Column("summary_written_at", sa.DateTime(timezone=True)),
    # progress
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # a claim: the run working on the call now, and until when (renewed while it works)
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("run_id", "call_id", "record_id", name="uq_call_records_run_call_record"),
)

# Bitrix24's own view of a call: refreshed on every listing, never touching progress.
_LISTED_FIELDS = (
    "started_at",
    "call_type",
    "direction",
    "phone_from",
    "phone_to",
    "portal_user_id",
    "duration_sec",
    "recording_url",
    "stat_id",
    "recording_url_signed",
    "failed_code",
    "telephony_cost",
    "telephony_currency",
    "employee_name",
    "portal_number",
    "line_name",
    "crm_entity_type",
    "crm_entity_id",
    "crm_url",
)


# CallRecord.verdict: what a transcript says of the call besides its lines (issue #23); NULL
# for a call with speech and a trusted answer. The one definition the product reads.
NO_SPEECH = "no_speech"  # nothing in it is speech: nothing sent, nothing billed
NEEDS_REVIEW = "needs_review"  # still doubtful after the STT and its second opinion
VERDICTS = (NO_SPEECH, NEEDS_REVIEW)

# The words people read for CallRecord.direction (listing.calls.DIRECTIONS' codes), in the
# report (report/labels.py) and the transcript header (transcripts/file_format.py) alike:
# here, the one package both may import.
DIRECTION_WORDS = {
    "ru": {
        "incoming": "входящий", "outgoing": "исходящий",
        "incoming_redirected": "входящий (переадресованный)", "callback": "обратный звонок",
        "info_call": "информационный звонок",
    },
    "en": {
        "incoming": "incoming", "outgoing": "outgoing",
        "incoming_redirected": "incoming (redirected)", "callback": "callback",
        "info_call": "informational call",
    },
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CallRecord:
    run_id: str
    call_id: str
    record_id: str
    started_at: str
    call_type: int
    direction: str
    phone_from: str
    phone_to: str
    portal_user_id: str
    duration_sec: int
    recording_url: str | None
    audio_path: str | None
    audio_bytes: int | None
    checksum: str | None
    audio_duration_sec: float | None
    transcript_path: str | None
    language: str | None
    model: str | None
    stt_duration_sec: float | None
    cost: float | None
    summary_path: str | None
    tags: str | None
    status: str
    error_code: str | None
    error_message: str | None
    attempts: int
    dagster_run_id: str | None
    audio_stored_at: datetime | None = None
    stat_id: int | None = None
    recording_url_signed: bool | None = None
    failed_code: str | None = None
    telephony_cost: str | None = None
    telephony_currency: str | None = None
    recording_source: str | None = None  # "link" (CALL_RECORD_URL) or "drive" (disk.file.get)
    stt_requests: int | None = None
    stt_sent_sec: float | None = None
    stt_request_sec: str | None = None  # JSON list of seconds, one per billed request
    role_mode: str | None = None  # energy | per_channel | diarized | mono | none
    hallucinations: int | None = None
    verdict: str | None = None  # VERDICTS: no_speech | needs_review; None
    doubts: str | None = None  # transcripts.second_opinion.SIGNALS that fired, comma separated
    fallback_model: str | None = None  # the second opinion's model, when one was asked
    fallback_request_sec: str | None = None  # JSON list, one per billed fallback request
    fallback_kept: bool | None = None
    employee_name: str | None = None  # user.get's NAME LAST_NAME of portal_user_id
    portal_number: str | None = None  # the line as PORTAL_NUMBER gives it
    line_name: str | None = None  # voximplant.line.get's name of portal_number
    crm_entity_type: str | None = None
    crm_entity_id: str | None = None
    crm_url: str | None = None  # the CRM card on the portal
    transcript_sha256: str | None = None
    summary_sha256: str | None = None
    transcript_written_at: datetime | None = None
    summary_written_at: datetime | None = None

    @property
    def has_recording(self) -> bool:
        """A link or a Drive file (`listing.calls.Call.has_recording`, as listed)."""
        return bool(self.recording_url or self.record_id)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.run_id, self.call_id, self.record_id)


_RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))
# What the summaries step writes: the QA sample, which may be drawn before it, shows none.
SUMMARY_FIELDS = ("summary_path", "tags", "summary_sha256", "summary_written_at")


def create_tables(tables: sa.MetaData, engine: sa.Engine) -> None:
    """`create_all`, safe when processes start together (two runs, the API): the one that
    loses the race to create a table finds it there on its next look. Each lost race is
    one table (or a lock held while the other creates one), so a few looks always do."""
    looks = len(tables.tables) + 2
    for look in range(1, looks + 1):
        try:
            tables.create_all(engine)
            return
        except sa.exc.DBAPIError:
            if look == looks:
                raise
            time.sleep(0.1 * look)


def _now() -> datetime:
    return datetime.now(UTC)


def database_engine(url: str) -> sa.Engine:
    """An engine on the ledger's database (SQLite file or PostgreSQL), set up as the ledger
    needs it; also what the limits shared by runs use (`state.shared_limits`)."""
    is_sqlite = url.startswith("sqlite")
    connect_args = {"check_same_thread": False, "timeout": 30} if is_sqlite else {}
    database = sa.engine.make_url(url).database
    if is_sqlite and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # A file cannot drop a connection the way a server does: ping PostgreSQL only.
    # hide_parameters: a failed statement's error text must not carry the row values
    # (other callers' phone numbers) into logs and the Dagster event log.
    engine = sa.create_engine(
        url, connect_args=connect_args, pool_pre_ping=not is_sqlite, hide_parameters=True
    )
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class ListedCall(Protocol):
    """What the ledger keeps of a listed call (`listing.calls.Call` is one)."""

    call_id: str
    record_id: str
    started_at: datetime
    call_type: int
    direction: str
    phone_from: str
    phone_to: str
    portal_user_id: str
    duration_sec: int
    recording_url: str | None
    stat_id: int
    recording_url_signed: bool
    failed_code: str
    telephony_cost: str
    telephony_currency: str
    employee_name: str
    portal_number: str
    line_name: str
    crm_entity_type: str
    crm_entity_id: str
    crm_url: str

    @property
    def has_recording(self) -> bool: ...


def listed_values(run_id: str, call: ListedCall) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "call_id": call.call_id,
        "record_id": call.record_id,
        "started_at": call.started_at.isoformat(),
        "call_type": call.call_type,
        "direction": call.direction,
        "phone_from": call.phone_from,
        "phone_to": call.phone_to,
        "portal_user_id": call.portal_user_id,
        "duration_sec": call.duration_sec,
        "recording_url": call.recording_url,
        "stat_id": call.stat_id,
        "recording_url_signed": call.recording_url_signed,
        "failed_code": call.failed_code,
        "telephony_cost": call.telephony_cost,
        "telephony_currency": call.telephony_currency,
        "employee_name": call.employee_name,
        "portal_number": call.portal_number,
        "line_name": call.line_name,
        "crm_entity_type": call.crm_entity_type,
        "crm_entity_id": call.crm_entity_id,
        "crm_url": call.crm_url,
    }


class Ledger:
    """Thread-safe access to the ledger tables (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._is_sqlite = url.startswith("sqlite")
        self.engine = database_engine(url)
        # SQLite allows one writer; serialising writes here avoids "database is locked"
        # under the asset's thread pool. PostgreSQL handles concurrency itself.
        self._write_lock = threading.Lock() if self._is_sqlite else _NullLock()
        try:
            create_tables(metadata, self.engine)
            self._add_new_columns()
        except sa.exc.DatabaseError as exc:
            if not self._is_sqlite or isinstance(exc, sa.exc.OperationalError):
                raise
            # Overwritten or truncated: one line naming the file and what to do, not the
            # driver's traceback (the CLI says the same before any work: ops.preflight).
            raise LedgerUnreadable(
                f"the ledger {sa.make_url(url).database} is not a readable database "
                f"({exc.orig}): restore it from a backup (`calltexts restore <backup folder> "
                "--force`), or move the file away and re-run (storage is adopted at no cost)"
            ) from None

    def _add_new_columns(self) -> None:
        """Columns added to the tables since a ledger was created (all nullable): a ledger
        from an earlier version keeps working without a migration tool."""
        for table in metadata.sorted_tables:
            present = {c["name"] for c in sa.inspect(self.engine).get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                kind = column.type.compile(dialect=self.engine.dialect)
                try:
                    with self._write_lock, self.engine.begin() as conn:
                        conn.execute(
                            sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                        )
                except sa.exc.DBAPIError:
                    # Another process (a second step of the run) added it first.
                    added = sa.inspect(self.engine).get_columns(table.name)
                    if column.name not in {c["name"] for c in added}:
                        raise

    def dispose(self) -> None:
        self.engine.dispose()

    def _insert(self, table: sa.Table) -> Any:
        dialect = sqlite if self._is_sqlite else postgresql
        return dialect.insert(table)

    # -- exports ---------------------------------------------------------------------------

    def start_export(
        self, run_id: str, period_from: str, period_to: str, actor: str, dagster_run_id: str
    ) -> None:
        values = {
            "period_from": period_from,
            "period_to": period_to,
            "status": "running",
            "started_at": _now(),
            "finished_at": None,
            "actor": actor,
            "dagster_run_id": dagster_run_id,
        }
        stmt = self._insert(call_exports).values(run_id=run_id, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id"], set_=values)
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def finish_export(self, run_id: str, status: str) -> None:
        stmt = (
            sa.update(call_exports)
            .where(call_exports.c.run_id == run_id)
            .values(status=status, finished_at=_now())
        )
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def export(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(call_exports).where(call_exports.c.run_id == run_id)
            ).first()
        return dict(row._mapping) if row else None

    def set_listing_fingerprint(self, run_id: str, fingerprint: str) -> None:
        stmt = (
            sa.update(call_exports)
            .where(call_exports.c.run_id == run_id)
            .values(listing_fingerprint=fingerprint)
        )
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def exports(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The `call_exports` rows of the given days that exist, by day, in one query."""
        stmt = sa.select(call_exports).where(call_exports.c.run_id.in_(list(run_ids)))
        with self.engine.connect() as conn:
            return {row.run_id: dict(row._mapping) for row in conn.execute(stmt)}

    # -- deliverables ----------------------------------------------------------------------

    def record_deliverable(
        self, key: str, sha256: str, stamp: str, dagster_run_id: str | None = None
    ) -> None:
        values = {
            "sha256": sha256,
            "stamp": stamp,
            "written_at": _now(),
            "dagster_run_id": dagster_run_id,
        }
        stmt = self._insert(deliverables).values(key=key, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_=values)
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def deliverable(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deliverables).where(deliverables.c.key == key)).first()
        return dict(row._mapping) if row else None

    def period_stamp(self, run_ids: Iterable[str], omit: Iterable[str] = ()) -> str:
        """A hash of every row of the given days as the registry and the report read them
        (claims and `updated_at` aside; `omit`: fields a file does not show): equal stamps,
        equal files."""
        return self.period_stamps(run_ids, omit)[0]

    def period_stamps(self, run_ids: Iterable[str], *omits: Iterable[str]) -> list[str]:
        """`period_stamp` for each of `omits`, in one pass over the rows."""
        kept = [[n for n in _RECORD_FIELDS if n not in set(omit)] for omit in omits]
        digests = [hashlib.sha256() for _ in kept]
        for record in self.iter_records(run_ids):
            for digest, names in zip(digests, kept, strict=True):
                digest.update(repr([getattr(record, name) for name in names]).encode())
                digest.update(b"\n")
        return [digest.hexdigest() for digest in digests]

    # -- records ---------------------------------------------------------------------------

    def upsert_listed(
        self, run_id: str, calls: Iterable[ListedCall], dagster_run_id: str | None = None
    ) -> int:
        """Insert new calls as `listed`; refresh Bitrix24 fields of known ones, keep progress.

        A recording attached after an earlier listing (RECORD_FILE_ID set late) makes a
        row of its own; the earlier `no_recording` row of the call goes, so the call is
        not in the registry twice."""
        calls = list(calls)
        rows = [
            {
                **listed_values(run_id, c),
                "status": Status.NO_RECORDING if not c.has_recording else Status.LISTED,
                "attempts": 0,
                "dagster_run_id": dagster_run_id,
                "updated_at": _now(),
            }
            for c in calls
        ]
        if not rows:
            return 0
        stmt = self._insert(call_records)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "call_id", "record_id"],
            set_={name: stmt.excluded[name] for name in _LISTED_FIELDS},
        )
        c = call_records.c
        superseded = sa.delete(call_records).where(
            c.run_id == sa.bindparam("day"),
            c.call_id == sa.bindparam("call"),
            c.record_id == "",
            c.status == Status.NO_RECORDING,
        )
        late = [{"day": run_id, "call": call.call_id} for call in calls if call.record_id]
        with self._write_lock, self.engine.begin() as conn:
            if late:
                conn.execute(superseded, late)
            conn.execute(stmt, rows)
        return len(rows)

    def record_invalid(
        self, run_id: str, call_id: str, message: str, code: str = "invalid_row"
    ) -> None:
        """Keep a row for a statistic row that cannot be exported, so it shows in the registry."""
        row = {
            "run_id": run_id,
            "call_id": call_id,
            "record_id": "",
            "started_at": "",
            "call_type": 0,
            "direction": "",
            "phone_from": "",
            "phone_to": "",
            "portal_user_id": "",
            "duration_sec": 0,
            "recording_url": None,
            "status": Status.INVALID,
            "error_code": code,
            "error_message": message,
            "attempts": 0,
            "updated_at": _now(),
        }
        stmt = self._insert(call_records).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "call_id", "record_id"],
            set_={"error_code": code, "error_message": message, "updated_at": _now()},
        )
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def update(
        self, key: tuple[str, str, str], *, release_claim_of: str | None = None, **values: Any
    ) -> None:
        """`release_claim_of`: the same statement drops that claimant's claim on the call (as
        `release` does, one commit instead of two), leaving anyone else's."""
        unknown = set(values) - set(_RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown ledger fields: {sorted(unknown)}")
        if release_claim_of is not None:
            c = call_records.c
            mine = c.claimed_by == release_claim_of  # SET reads the row as it was
            values["claimed_by"] = sa.case((mine, None), else_=c.claimed_by)
            values["claimed_until"] = sa.case((mine, None), else_=c.claimed_until)
        stmt = sa.update(call_records).where(*_key_filter(key)).values(**values, updated_at=_now())
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                raise KeyError(f"no ledger row for {key}")

    # -- claims: overlapping runs share the work ----------------------------------------------

    def claim(self, key: tuple[str, str, str], claimant: str, until: datetime) -> bool:
        """Take the call for `claimant` until `until`, unless another claimant holds it and
        its claim has not expired. One UPDATE, atomic on SQLite and PostgreSQL alike."""
        c = call_records.c
        free = sa.or_(c.claimed_by.is_(None), c.claimed_by == claimant, c.claimed_until < _now())
        stmt = (
            sa.update(call_records)
            .where(*_key_filter(key), free)
            .values(claimed_by=claimant, claimed_until=until)
        )
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def renew(self, keys: Iterable[tuple[str, str, str]], claimant: str, until: datetime) -> None:
        with self._write_lock, self.engine.begin() as conn:
            for key in keys:
                conn.execute(
                    sa.update(call_records)
                    .where(*_key_filter(key), call_records.c.claimed_by == claimant)
                    .values(claimed_until=until)
                )

    def release(self, key: tuple[str, str, str], claimant: str) -> None:
        stmt = (
            sa.update(call_records)
            .where(*_key_filter(key), call_records.c.claimed_by == claimant)
            .values(claimed_by=None, claimed_until=None)
        )
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def claimants(self) -> set[str]:
        """Everyone holding a claim now (expired or not)."""
        stmt = (
            sa.select(call_records.c.claimed_by)
            .distinct()
            .where(call_records.c.claimed_by.is_not(None))
        )
        with self.engine.connect() as conn:
            return {claimant for (claimant,) in conn.execute(stmt)}

    def release_claims_of(self, claimants: Iterable[str]) -> int:
        """Drop the claims of runs that are over (finished, or their process died)."""
        gone = list(claimants)
        if not gone:
            return 0
        stmt = (
            sa.update(call_records)
            .where(call_records.c.claimed_by.in_(gone))
            .values(claimed_by=None, claimed_until=None)
        )
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def records(self, run_ids: Sequence[str]) -> list[CallRecord]:
        """Every row of the given days at once: for tests and small periods. The assets go
        through `iter_records` / `days` so that memory does not grow with the period."""
        stmt = (
            sa.select(*[call_records.c[name] for name in _RECORD_FIELDS])
            .where(call_records.c.run_id.in_(list(run_ids)))
            .order_by(call_records.c.started_at, call_records.c.call_id)
        )
        with self.engine.connect() as conn:
            # Positional: the columns are selected in the dataclass's field order (a keyword
            # mapping per row cost half the time of a no-op re-run's ledger reads).
            return [CallRecord(*row) for row in conn.execute(stmt)]

    def days(self, run_ids: Iterable[str]) -> Iterator[list[CallRecord]]:
        """The rows of one day (export id) at a time, in the order given; within a day by
        start time then call id. A day is read when the previous one has been consumed, so
        rows updated meanwhile are read as they are then."""
        for run_id in run_ids:
            yield self.records([run_id])

    def iter_records(self, run_ids: Iterable[str]) -> Iterator[CallRecord]:
        """All rows of the given days, read a day at a time (see `days`)."""
        for day in self.days(run_ids):
            yield from day

    def totals(self, run_ids: Sequence[str]) -> PeriodTotals:
        """Counts and sums of the given days, computed by the database."""
        c = call_records.c
        in_period = c.run_id.in_(list(run_ids))
        transcribed = c.status == Status.TRANSCRIBED
        by_status = sa.select(
            c.status,
            sa.func.count(),
            sa.func.count(c.audio_path),
            sa.func.sum(sa.case((transcribed, c.stt_duration_sec), else_=0.0)),
            sa.func.sum(sa.case((transcribed, c.cost), else_=0.0)),
        ).where(in_period)
        languages = sa.select(c.language).distinct().where(in_period, transcribed)
        totals = PeriodTotals()
        with self.engine.connect() as conn:
            for status, count, with_audio, seconds, cost in conn.execute(
                by_status.group_by(c.status)
            ):
                totals.statuses[status] = count
                totals.with_audio += with_audio
                totals.transcribed_seconds += seconds or 0.0
                totals.transcribed_cost += cost or 0.0
            totals.languages = sorted(lang for (lang,) in conn.execute(languages) if lang)
        return totals

    def stored_recordings(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Stored recordings of the given days by source and format: `{"drive/wav": 3}`."""
        c = call_records.c
        stmt = sa.select(c.recording_source, c.audio_path).where(
            c.run_id.in_(list(run_ids)), c.audio_path.is_not(None)
        )
        counts: Counter[str] = Counter()
        with self.engine.connect() as conn:
            for source, path in conn.execution_options(yield_per=1000).execute(stmt):
                counts[f"{source or 'unknown'}/{Path(path).suffix.lstrip('.')}"] += 1
        return dict(sorted(counts.items()))

    def calls_with_several_recordings(self, run_ids: Sequence[str]) -> set[str]:
        """Call ids with more than one recorded row in the given days (one row per leg of a
        transferred call, each with its own recording): their files need names of their own."""
        c = call_records.c
        stmt = (
            sa.select(c.call_id)
            .where(
                c.run_id.in_(list(run_ids)),
                c.status.not_in([Status.NO_RECORDING, Status.INVALID]),
            )
            .group_by(c.call_id)
            .having(sa.func.count() > 1)
        )
        with self.engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def record(self, key: tuple[str, str, str]) -> CallRecord | None:
        stmt = sa.select(*[call_records.c[name] for name in _RECORD_FIELDS]).where(
            *_key_filter(key)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return CallRecord(*row) if row else None

    def transcribed_keys(self, run_ids: Iterable[str]) -> set[tuple[str, str]]:
        """(call id, record id) of the transcribed calls of the given days."""
        c = call_records.c
        stmt = sa.select(c.call_id, c.record_id).where(
            c.run_id.in_(list(run_ids)), c.status == Status.TRANSCRIBED
        )
        with self.engine.connect() as conn:
            return {(call_id, record_id) for call_id, record_id in conn.execute(stmt)}

    def count_rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(call_records)).scalar_one()


@dataclass
class PeriodTotals:
    """What the assets report of a period as a whole (`Ledger.totals`)."""

    statuses: dict[str, int] = field(default_factory=dict)
    with_audio: int = 0  # rows with a stored recording
    transcribed_seconds: float = 0.0
    transcribed_cost: float = 0.0
    languages: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return self.statuses.get(status, 0)


def _key_filter(key: tuple[str, str, str]) -> tuple[Any, ...]:
    run_id, call_id, record_id = key
    return (
        call_records.c.run_id == run_id,
        call_records.c.call_id == call_id,
        call_records.c.record_id == record_id,
    )


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
