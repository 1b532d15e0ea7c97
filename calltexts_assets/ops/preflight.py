"""What must hold before an export does any work: the home is writable and the ledger's
database answers (the configured models' shutdown dates: `api/estimate.py`). Each failure is
one line naming the variable, never a traceback."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

from calltexts_assets.listing.periods import PeriodError, PeriodPolicy
from calltexts_assets.runlog.masking import mask_text
from calltexts_assets.settings import Settings, portal_today


def _unwritable(folder: Path) -> str | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"not writable ({exc.strerror or exc})"
    return None


def home_problem(settings: Settings) -> str | None:
    reason = _unwritable(settings.home)
    return f"CALLTEXTS_HOME={settings.home}: {reason}" if reason else None


def database_problem(settings: Settings, timeout_sec: int = 5) -> str | None:
    """A SQLite ledger needs a writable folder (the file is created on first use); a
    server must answer."""
    try:
        url = sa.make_url(settings.ledger_url())
    except sa.exc.ArgumentError:
        return "CALLTEXTS_DATABASE_URL: not a database URL"
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database or ".").resolve().parent
        reason = _unwritable(folder)
        return (
            f"CALLTEXTS_DATABASE_URL: the ledger's folder {folder} is {reason}" if reason else None
        )
    try:
        engine = sa.create_engine(
            url, connect_args={"connect_timeout": timeout_sec}, hide_parameters=True
        )
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except ImportError as exc:
        return f"CALLTEXTS_DATABASE_URL: no driver for it ({exc.name})"
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return f"CALLTEXTS_DATABASE_URL: cannot connect to the database: {mask_text(reason)}"
    return None


RESTORE_HINT = (
    "restore the ledger from a backup (`calltexts restore <backup folder> --force`), or move "
    "the file away and re-run: the run adopts what storage holds without paying again"
)


def sqlite_ledger_problem(path: Path) -> str | None:
    """A ledger file that exists but is not a SQLite database (overwritten, truncated, a
    disk error): one line naming it and what to do, instead of the driver's traceback."""
    if not path.is_file() or path.stat().st_size == 0:
        return None  # created on first use
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"the ledger {path} is not a readable database ({exc}): {RESTORE_HINT}"
    return None


def instance_problem(settings: Settings) -> str | None:
    """The Dagster instance `calltexts run` and `calltexts dev` use: DAGSTER_HOME set to a
    folder (Dagster itself answers a missing one with a 24-line traceback)."""
    if not settings.dagster_home:
        return (
            "DAGSTER_HOME is not set: point it at the Dagster instance's folder, e.g. "
            f"`mkdir -p {settings.home / 'dagster_home'} && "
            f"export DAGSTER_HOME={settings.home / 'dagster_home'}` (`make demo` does this)"
        )
    folder = Path(settings.dagster_home).expanduser()
    if not folder.is_dir():
        return (
            f"DAGSTER_HOME={folder}: no such folder: create it (`mkdir -p {folder}`) or "
            "point DAGSTER_HOME at the Dagster instance's folder"
        )
    return None


def environment_problems(settings: Settings, *, ledger_readable: bool = True) -> list[str]:
    """Checks that touch the machine (the settings themselves are already valid);
    `ledger_readable=False` for the command that replaces the ledger (`restore`)."""
    home = home_problem(settings)
    if home and not settings.database_url:  # the default ledger lives in the home
        return [home]
    problems = [p for p in (home, database_problem(settings)) if p]
    url = sa.make_url(settings.ledger_url())
    if not problems and ledger_readable and url.get_backend_name() == "sqlite":
        problems += filter(None, [sqlite_ledger_problem(Path(url.database or ""))])
    return problems


def export_period(
    settings: Settings,
    period_from: date | None,
    period_to: date | None,
    days: int,
) -> tuple[date, date]:
    """The CLI's period: `--from/--to`, or the last `days` complete days; the API's rules
    (no future or unfinished day, nothing before the first partition). PeriodError."""
    if days < 1:
        raise PeriodError(f"--days must be at least 1, got {days}")
    policy = PeriodPolicy(
        timezone=settings.timezone,
        default_days=days,
        first_exportable_day=settings.partitions_start,
        last_exportable_day=lambda: portal_today(settings.timezone) - timedelta(days=1),
    )
    if period_to is None and period_from is None:
        period_from = policy.last_day() - timedelta(days=days - 1)
    elif period_from is None:
        period_from = period_to - timedelta(days=days - 1)  # type: ignore[operator]
    # An operator may export a year at once: the API's 90-day guard is for HTTP clients.
    return policy.resolve(period_from, period_to, allow_long_period=True)
