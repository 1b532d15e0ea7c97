"""The audit journal: who asked for an export or read a run's files, which runs were started
and by whom, and every retention, backup and restore.

Append-only, in two places: the `audit_events` table of the ledger database (queried by
`calltexts audit`) and JSON lines under `CALLTEXTS_HOME/logs/audit/audit_<YYYY-MM>.jsonl`
(one file a month, for log shippers). Nothing is ever updated; `prune` (run by `calltexts
retention`) deletes what is older than the registry's 365 days, rows and whole months of lines.
No phone number goes in: the fields are names, addresses, ids and dates, and free text is
scrubbed as the run log is.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from calltexts_assets.runlog.log import scrub
from calltexts_assets.state.ledger import create_tables

KEEP_DAYS = 365  # as long as the registry it accounts for
JOURNAL_FOLDER = "audit"

metadata = sa.MetaData()

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    # export_request, run_read, run_started, retention, backup, restore
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),  # token name, OS user, schedule
    sa.Column("via", sa.String(16), nullable=False),  # api, cli, ui, schedule, sensor, backfill
    sa.Column("client", sa.String(64)),  # the API client's address
    sa.Column("run_id", sa.String(64)),
    sa.Column("period_from", sa.String(10)),
    sa.Column("period_to", sa.String(10)),
    sa.Column("summaries", sa.Boolean),
    sa.Column("idempotency_key", sa.String(36)),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),  # JSON: counts, where a backup went
    # A run's start is seen by every process of the run: the first one journals it.
    sa.Column("once", sa.String(100), unique=True),
)


@dataclass(frozen=True)
class AuditEvent:
    event: str
    actor: str
    via: str
    outcome: str
    client: str | None = None
    run_id: str | None = None
    period_from: str | None = None
    period_to: str | None = None
    summaries: bool | None = None
    idempotency_key: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None  # set when journalled


def os_user() -> str:
    """The process's OS user from the password database (not from $USER, which anyone sets)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# Tags of a run (Dagster's own, and those `calltexts run` and the API put on theirs).
ACTOR_TAG = "actor"
CLI_ACTORS = ("calltexts run", "calltexts retention")  # runs of the CLI, in its process
API_KEY_TAG = "calltexts/idempotency_key"  # api.launcher.IDEMPOTENCY_TAG
_RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
_PARTITION = "dagster/partition"
_VIA_TAGS = (("dagster/schedule_name", "schedule"), ("dagster/sensor_name", "sensor"))


def run_started(
    run_id: str, tags: Mapping[str, str], user: Callable[[], str] = os_user
) -> AuditEvent | None:
    """The journal entry of an export run's start, or None for a run the journal has from
    elsewhere (the API's, journalled with its request) or that exports no period."""
    if API_KEY_TAG in tags:
        return None
    first, last = (tags.get(_RANGE[0]), tags.get(_RANGE[1]))
    if not (first and last):
        first = last = tags.get(_PARTITION)
    if not first:
        return None
    via, actor = run_actor(tags, user)
    return AuditEvent(
        "run_started", actor, via, "started", run_id=run_id, period_from=first, period_to=last
    )


def run_actor(tags: Mapping[str, str], user: Callable[[], str] = os_user) -> tuple[str, str]:
    """How a run was started and by whom: (via, actor). The open-source UI has no users: a
    run launched there (or by any GraphQL client) names the OS user of the process that
    runs it; the proxy in front of the UI knows the person (README, "The Dagster UI")."""
    if tags.get(ACTOR_TAG) in CLI_ACTORS:
        return "cli", user()
    for tag, kind in _VIA_TAGS:
        if tags.get(tag):
            return kind, tags[tag]
    via = "backfill" if tags.get("dagster/backfill") else "ui"
    return via, tags.get("dagster/user") or user()


class AuditJournal:
    def __init__(
        self,
        engine: sa.Engine,
        log_dir: Path | str | None,
        clock: Callable[[], datetime] | None = None,
        *,
        create: bool = True,
    ) -> None:
        """`create=False` to only read: a database a backup is yet to be restored into must
        stay empty (pg_restore refuses tables that exist)."""
        self.engine = engine
        self.folder = Path(log_dir) / JOURNAL_FOLDER if log_dir else None
        self.clock = clock or (lambda: datetime.now(UTC))
        if create:
            create_tables(metadata, engine)

    def record(self, event: AuditEvent, *, once: str | None = None) -> bool:
        """Journal `event` (the table, then its JSON line); with `once`, only the first time
        that key is journalled. True when it was written."""
        at = self.clock()
        row = _row(event) | {"at": at, "once": once}
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(audit_events).values(**row))
        except sa.exc.IntegrityError:
            if once is None:
                raise
            return False
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            line = json.dumps(_line(row), ensure_ascii=False, separators=(",", ":")) + "\n"
            # One write of one line in append mode: lines of concurrent writers never mix.
            with (self.folder / f"audit_{at:%Y-%m}.jsonl").open("a", encoding="utf-8") as out:
                out.write(line)
        return True

    def since(self, start: datetime) -> list[AuditEvent]:
        if not sa.inspect(self.engine).has_table(audit_events.name):
            return []
        query = (
            sa.select(audit_events)
            .where(audit_events.c.at >= start)
            .order_by(audit_events.c.at, audit_events.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_event(row._mapping) for row in rows]

    def prune(self, keep: timedelta = timedelta(days=KEEP_DAYS), *, dry_run: bool = False) -> int:
        """Delete the rows older than `keep`, and the monthly files whose whole month is;
        returns the rows (with `dry_run`: that would be) deleted."""
        cutoff = self.clock() - keep
        old = audit_events.c.at < cutoff
        with self.engine.begin() as conn:
            if dry_run:
                count = sa.select(sa.func.count()).select_from(audit_events).where(old)
                return conn.execute(count).scalar_one()
            deleted = conn.execute(sa.delete(audit_events).where(old)).rowcount
        for path in self._old_files(cutoff.date()):
            path.unlink(missing_ok=True)
        return deleted

    def _old_files(self, cutoff: date) -> Iterable[Path]:
        if self.folder is None or not self.folder.exists():
            return []
        old = []
        for path in self.folder.glob("audit_*.jsonl"):
            try:
                month = datetime.strptime(path.stem.removeprefix("audit_"), "%Y-%m").date()
            except ValueError:
                continue
            next_month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
            if next_month <= cutoff:
                old.append(path)
        return old


def _clean(text: str | None, limit: int) -> str | None:
    return None if text is None else str(scrub(text))[:limit]


def _row(event: AuditEvent) -> dict[str, Any]:
    values = asdict(event)
    values.pop("at")
    # Free text is scrubbed like the run log; ids, dates and addresses are checked shapes.
    values["actor"] = _clean(event.actor, 128) or "-"
    values["outcome"] = _clean(event.outcome, 64) or "-"
    values["detail"] = json.dumps(scrub(dict(event.detail)), ensure_ascii=False, sort_keys=True)
    return values


def _line(row: Mapping[str, Any]) -> dict[str, Any]:
    line = {k: v for k, v in row.items() if v is not None and k not in ("once", "detail")}
    line["at"] = row["at"].isoformat()
    detail = json.loads(row["detail"] or "{}")
    return line | ({"detail": detail} if detail else {})


def _event(row: Mapping[str, Any]) -> AuditEvent:
    at = row["at"]
    return AuditEvent(
        **{k: row[k] for k in AuditEvent.__dataclass_fields__ if k not in ("detail", "at")},
        detail=json.loads(row["detail"] or "{}"),
        at=at if at.tzinfo else at.replace(tzinfo=UTC),  # SQLite forgets the zone
    )


_SINCE = re.compile(r"(\d+)\s*([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def since_start(text: str, now: datetime) -> datetime:
    """`7d`, `12h`, `30m` before `now`, or a day `YYYY-MM-DD` (UTC midnight)."""
    match = _SINCE.fullmatch(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected 7d, 12h, 30m or YYYY-MM-DD") from None


COLUMNS = ("at", "event", "actor", "via", "client", "run", "period", "key", "outcome")


def table_lines(events: Iterable[AuditEvent]) -> list[str]:
    """The events as an aligned text table (UTC times), details after the outcome."""
    rows = [COLUMNS]
    for e in events:
        period = f"{e.period_from}..{e.period_to}" if e.period_from else ""
        if e.summaries:
            period += " +summaries"
        detail = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
        rows.append((
            e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if e.at else "",
            e.event, e.actor, e.via, e.client or "", (e.run_id or "")[:8], period,
            (e.idempotency_key or "")[:8], f"{e.outcome} {detail}".strip(),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)] + [0]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
