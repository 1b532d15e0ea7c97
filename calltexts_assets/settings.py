"""Environment variables the project reads (the README's configuration table lists them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from calltexts_assets.assets.partitions import PORTAL_TIMEZONE

TRUE_VALUES = {"1", "true", "yes", "on"}


def env_flag(name: str, default: bool = False, env: Mapping[str, str] = os.environ) -> bool:
    value = env.get(name)
    return default if value is None or value == "" else value.strip().lower() in TRUE_VALUES


def env_float(name: str, default: float, env: Mapping[str, str] = os.environ) -> float:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a number") from exc


def home_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Root of local state: storage, ledger, logs (`var/` of the working directory)."""
    return Path(env.get("CALLTEXTS_HOME") or "var").resolve()


def database_url(env: Mapping[str, str] = os.environ) -> str:
    return env.get("CALLTEXTS_DATABASE_URL") or f"sqlite:///{home_dir(env) / 'ledger.sqlite'}"


def credentials_configured(env: Mapping[str, str] = os.environ) -> bool:
    return bool(env.get("BITRIX24_WEBHOOK_URL") or env.get("BITRIX24_OAUTH_TOKEN"))


def portal_today(tz: str = PORTAL_TIMEZONE) -> date:
    return datetime.now(ZoneInfo(tz)).date()
