"""Backups that restore: the ledger, taken consistently while runs may be writing, and the
local storage; and their restore into a fresh home.

Order matters: the ledger first, then the files. Every file the ledger names was written
(atomically) before its row was updated, so it exists when the files are copied; a file
written after the ledger copy is only extra, and a re-run of its period after a restore
finds the ledger row still at the step before and does that step again. S3 storage is not
copied: keep the bucket versioned with lifecycle rules (docs/runbooks/call_export.md).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
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
# What a restore keeps of the home it replaces: the backups themselves.
_KEPT_TOP = {"backups"}
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


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
    schema = ledger_schema(url)
    # A ledger kept in a schema of a shared database: that schema only, never the others'
    # data (nor their locks: a dump of the whole database waits on every schema's tables).
    scope = [f"--schema={schema}"] if schema else []
    return [*args, *scope, "--dbname", url.database or "postgres"], env


def ledger_schema(url: sa.URL) -> str | None:
    """The schema the ledger's tables are created in: the first of the URL's search_path
    (`?options=-csearch_path=<schema>`), None without one (the database is the ledger's)."""
    options = url.query.get("options", "")
    text = " ".join(options) if isinstance(options, tuple) else options
    found = re.search(r"search_path\s*=\s*([^\s,]+)", text)
    schema = found.group(1).strip("'") if found else ""
    return schema if schema and schema != '"$user"' and schema != "$user" else None


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


def _entry(folder: Path, path: Path) -> dict[str, object]:
    return {
        "path": path.relative_to(folder).as_posix(),
        "size": path.stat().st_size,
        "sha256": _sha256(path),
    }


def backup(settings: Settings, target: Path) -> Backup:
    """A new backup folder under `target`: the ledger, then the local storage; the manifest
    lists every file with its size and sha256."""
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
    contents = [_entry(folder, ledger_file)]
    files = size = 0
    if settings.storage_backend == "local":
        for path in _export_files(settings.home):
            copy = folder / FILES / path.relative_to(settings.home)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            contents.append(_entry(folder, copy))
            files, size = files + 1, size + copy.stat().st_size
    manifest = {
        "created_at": stamp,
        "ledger": ledger,
        "ledger_sha256": contents[0]["sha256"],
        "storage": settings.storage_backend,
        "files": files,
        "bytes": size,
        "contents": contents,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Backup(folder, ledger, files, size)


def _few(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _listed(folder: Path, manifest: dict) -> list[dict]:
    """The manifest's files; a manifest of an older version, which had none, as far as it
    can be checked: the ledger by its sha256, the storage by its count and bytes."""
    if "contents" in manifest:
        return manifest["contents"]
    stored = folder / FILES
    found = sorted(p for p in stored.rglob("*") if p.is_file()) if stored.exists() else []
    sizes = sum(p.stat().st_size for p in found)
    if (len(found), sizes) != (manifest.get("files"), manifest.get("bytes")):
        raise BackupError(
            f"{folder} does not match its manifest, nothing was restored: it lists "
            f"{manifest.get('files')} files of {manifest.get('bytes')} bytes, the folder holds "
            f"{len(found)} of {sizes}; use another backup"
        )
    ledger = SQLITE_COPY if manifest.get("ledger") == "sqlite" else PG_DUMP
    ledger_entry = {"path": ledger, "size": (folder / ledger).stat().st_size}
    return [
        {**ledger_entry, "sha256": manifest.get("ledger_sha256")},
        *({"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size} for p in found),
    ]


def verified_manifest(folder: Path) -> tuple[dict, list[dict]]:
    """The backup's manifest and files, each file checked (size and sha256) against it;
    BackupError naming what is wrong, in one line."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise BackupError(f"{folder} is not a calltexts backup (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = _listed(folder, manifest)
        paths = [Path(str(entry["path"])) for entry in listed]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError(
            f"{manifest_path} is not a readable manifest: use another backup"
        ) from None
    if any(p.is_absolute() or ".." in p.parts for p in paths):
        raise BackupError(f"{manifest_path} names files outside the backup: use another backup")
    missing, resized, changed = [], [], []
    for entry in listed:
        path = folder / str(entry["path"])
        if not path.is_file():
            missing.append(str(entry["path"]))
        elif path.stat().st_size != entry["size"]:
            resized.append(f"{entry['path']} ({path.stat().st_size} of {entry['size']} bytes)")
        elif entry.get("sha256") and _sha256(path) != entry["sha256"]:
            changed.append(str(entry["path"]))
    damage = [
        f"{len(names)} {what} ({_few(names)})"
        for what, names in (
            ("files missing", missing),
            ("of another size", resized),
            ("with another sha256", changed),
        )
        if names
    ]
    if damage:
        raise BackupError(
            f"{folder} does not match its manifest, nothing was restored: "
            f"{'; '.join(damage)}; use another backup"
        )
    return manifest, listed


def _link_or_copy(source: Path, target: Path) -> None:
    """A file of the old home into the new one without copying its bytes where it can."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or the filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def _swap_in(staged: Path, home: Path) -> None:
    """The staged home becomes the home; the old one goes. Killed before the swap, the old
    home is as it was (and the staged one is removed by the next restore)."""
    if not home.exists():
        os.rename(staged, home)
        return
    if not _exchange(staged, home):  # two renames: a kill between leaves `home` absent
        aside = staged.with_name(staged.name + ".old")
        os.rename(home, aside)
        os.rename(staged, home)
        staged = aside
    shutil.rmtree(staged)


def _replace_sqlite_file(copy: Path, target: Path) -> None:
    """A ledger file outside the home, replaced: the new file staged beside it, the old
    one's -wal/-shm set aside (never replayed into the new one), then one rename."""
    staged = target.with_name(f".{target.name}.restoring")
    shutil.copy2(copy, staged)
    for suffix in _SQLITE_COMPANIONS:
        companion = target.with_name(target.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(f".{target.name}{suffix}.replaced"))
    os.replace(staged, target)


def restore(backup_folder: Path, settings: Settings, *, force: bool = False) -> Backup:
    """The backup into the home and ledger `settings` name, which must be empty (or
    `force`). Every file is checked against the manifest before anything is touched; the
    home is built beside the old one and swapped in at once, so a restore killed half-way
    leaves the old home as it was."""
    manifest, listed = verified_manifest(backup_folder)
    url = sa.make_url(settings.ledger_url())
    kind = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
    if manifest["ledger"] != kind:
        held = manifest["ledger"]
        raise BackupError(f"the backup holds a {held} ledger; this home uses {kind}")
    ledger_file = backup_folder / (SQLITE_COPY if kind == "sqlite" else PG_DUMP)
    home = settings.home.resolve()
    if not force and any(_export_files(home)):
        raise BackupError(f"CALLTEXTS_HOME={home} already holds exports; restore into a new one")
    ledger_path = Path(url.database or "").resolve() if kind == "sqlite" else None
    if ledger_path is not None and ledger_path.exists() and not force:
        raise BackupError(f"a ledger exists at {ledger_path}; restore into a fresh home")
    if home.exists() and os.path.ismount(home):
        raise BackupError(
            f"CALLTEXTS_HOME={home} is a mount point, which cannot be swapped at once: "
            "restore into a new folder and point CALLTEXTS_HOME at it"
        )
    for stale in home.parent.glob(f".{home.name}.restoring-*"):  # of a restore killed before
        if not stale.name.endswith(".old"):  # (an old home set aside is left to the operator)
            shutil.rmtree(stale, ignore_errors=True)
    staged = home.parent / f".{home.name}.restoring-{os.getpid()}"
    staged.mkdir(parents=True)
    files = size = 0
    for entry in listed:
        relative = Path(str(entry["path"]))
        if relative.parts[0] != FILES:
            continue
        target_file = staged.joinpath(*relative.parts[1:])
        target_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(backup_folder / relative, target_file)
        files, size = files + 1, size + target_file.stat().st_size
    for top in _KEPT_TOP:
        kept = home / top
        for path in sorted(p for p in kept.rglob("*") if p.is_file()) if kept.is_dir() else []:
            _link_or_copy(path, staged / path.relative_to(home))
    if ledger_path is not None and ledger_path.is_relative_to(home):
        in_staged = staged / ledger_path.relative_to(home)
        in_staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ledger_file, in_staged)  # the old one's -wal/-shm stay with the old home
    elif ledger_path is not None:
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        _replace_sqlite_file(ledger_file, ledger_path)
    else:
        args, env = _libpq(settings, url)
        # --clean: the ledger replaced, not merged; one transaction: all of it or nothing.
        command = [
            "pg_restore", "--no-owner", "--clean", "--if-exists", "--single-transaction",
            "--exit-on-error", *args, str(ledger_file),
        ]  # fmt: skip
        _run(command, env, "pg_restore")
    home.parent.mkdir(parents=True, exist_ok=True)
    _swap_in(staged, home)
    return Backup(backup_folder, kind, files, size)
