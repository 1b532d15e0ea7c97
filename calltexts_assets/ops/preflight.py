"""What must hold before an export does any work: the home is writable and the ledger's
database answers (the configured models' shutdown dates: `api/estimate.py`). Each failure is
one line naming the variable, never a traceback."""

from __future__ import annotations

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


def environment_problems(settings: Settings) -> list[str]:
    """Checks that touch the machine (the settings themselves are already valid)."""
    home = home_problem(settings)
    if home and not settings.database_url:  # the default ledger lives in the home
        return [home]
    return [p for p in (home, database_problem(settings)) if p]


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
