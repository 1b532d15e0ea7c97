"""Backups that restore: the ledger, taken consistently while runs may be writing, and the
local storage; and their restore into a fresh home.

Order matters: the ledger first, then the files. Every file the ledger names was written
(atomically) before its row was updated, so it exists when the files are copied; a file
written after the ledger copy is only extra, and a re-run of its period after a restore
finds the ledger row still at the step before and does that step again. S3 storage is not
copied: keep the bucket versioned with lifecycle rules (docs/runbooks/call_export.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from calltexts_assets.settings import Settings

MANIFEST = "manifest.json"
SQLITE_COPY = "ledger.sqlite"
PG_DUMP = "ledger.pgdump"
FILES = "storage"
# Under the home but not the export: scratch audio and the ledger file itself.
_SKIPPED_TOP = {"tmp", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "backups"}


class BackupError(RuntimeError):
    """The backup or restore cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Backup:
    path: Path
    ledger: str  # "sqlite" or "postgresql"
    files: int
    bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _libpq(settings: Settings, url: sa.URL) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore connection arguments; the password goes in the environment, not
    on a command line every user of the machine can read."""
    args = ["--host", url.host or "127.0.0.1", "--port", str(url.port or 5432)]
    if url.username:
        args += ["--username", url.username]
    env = settings.child_environment(**({"PGPASSWORD": url.password} if url.password else {}))
    return [*args, "--dbname", url.database or "postgres"], env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BackupError(f"{what}: {command[0]} is not installed (postgresql-client)") from exc
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {done.stderr.strip().splitlines()[-1:]}")


def _export_files(home: Path) -> Iterator[Path]:
    for top in sorted(home.iterdir()) if home.exists() else []:
        if top.name in _SKIPPED_TOP or top.name.startswith("."):
            continue
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        # hidden files are writes in flight (`.<name>.*.tmp`), never objects
        yield from (p for p in paths if not p.name.startswith("."))


def backup(settings: Settings, target: Path) -> Backup:
    """A new backup folder under `target`: the ledger, then the local storage."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = target / f"calltexts_backup_{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    url = sa.make_url(settings.ledger_url())
    if url.get_backend_name() == "sqlite":
        source = Path(url.database or "")
        if not source.exists():
            raise BackupError(f"no ledger at {source}: nothing to back up")
        # SQLite's online backup: a consistent copy while other connections write.
        with sqlite3.connect(source) as live, sqlite3.connect(folder / SQLITE_COPY) as copy:
            live.backup(copy)
        ledger, ledger_file = "sqlite", folder / SQLITE_COPY
    else:
        args, env = _libpq(settings, url)
        ledger_file = folder / PG_DUMP
        # One snapshot (a repeatable-read transaction) however long the dump takes.
        _run(["pg_dump", "--format=custom", "--file", str(ledger_file), *args], env, "pg_dump")
        ledger = "postgresql"
    files = size = 0
    if settings.storage_backend == "local":
        for path in _export_files(settings.home):
            copy = folder / FILES / path.relative_to(settings.home)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            files, size = files + 1, size + path.stat().st_size
    manifest = {
        "created_at": stamp,
        "ledger": ledger,
        "ledger_sha256": _sha256(ledger_file),
        "storage": settings.storage_backend,
        "files": files,
        "bytes": size,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Backup(folder, ledger, files, size)


def restore(backup_folder: Path, settings: Settings, *, force: bool = False) -> Backup:
    """The backup into the home and ledger `settings` name, which must be empty (or
    `force`): the ledger checked against the manifest, then the files."""
    manifest_path = backup_folder / MANIFEST
    if not manifest_path.exists():
        raise BackupError(f"{backup_folder} is not a calltexts backup (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    url = sa.make_url(settings.ledger_url())
    kind = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
    if manifest["ledger"] != kind:
        held = manifest["ledger"]
        raise BackupError(f"the backup holds a {held} ledger; this home uses {kind}")
    ledger_file = backup_folder / (SQLITE_COPY if kind == "sqlite" else PG_DUMP)
    if _sha256(ledger_file) != manifest["ledger_sha256"]:
        raise BackupError(f"{ledger_file} does not match its manifest: the backup is damaged")
    home = settings.home
    if not force and any(_export_files(home)):
        raise BackupError(f"CALLTEXTS_HOME={home} already holds exports; restore into a new one")
    if kind == "sqlite":
        target = Path(url.database or "")
        if target.exists() and not force:
            raise BackupError(f"a ledger exists at {target}; restore into a fresh home")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ledger_file, target)
    else:
        args, env = _libpq(settings, url)
        command = ["pg_restore", "--no-owner", "--exit-on-error", *args, str(ledger_file)]
        _run(command, env, "pg_restore")
    files = size = 0
    stored = backup_folder / FILES
    for path in sorted(p for p in stored.rglob("*") if p.is_file()) if stored.exists() else []:
        target_file = home / path.relative_to(stored)
        target_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target_file)
        files, size = files + 1, size + path.stat().st_size
    return Backup(backup_folder, kind, files, size)
