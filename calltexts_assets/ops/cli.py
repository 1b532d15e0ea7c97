"""The `calltexts` command: run an export, serve the sandbox, the API, retention, the audit
journal."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from calltexts_assets.api.estimate import configured_model_notices, model_problems
from calltexts_assets.listing.periods import PeriodError
from calltexts_assets.ops.preflight import environment_problems, export_period, instance_problem
from calltexts_assets.settings import (
    API_SCOPES,
    Settings,
    SettingsError,
    apply_dagster_environment,
    load_settings,
    portal_today,
)


def _add_sandbox_args(parser: argparse.ArgumentParser, days: int, calls_per_day: int) -> None:
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic calls")
    parser.add_argument("--days", type=int, default=days, help="days of calls, up to yesterday")
    parser.add_argument("--calls-per-day", type=int, default=calls_per_day)


def _add_period_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="period_from", type=date.fromisoformat)
    parser.add_argument("--to", dest="period_to", type=date.fromisoformat)
    parser.add_argument("--days", type=int, default=60, help="last N days up to yesterday")
    parser.add_argument("--sandbox-calls-per-day", type=int, default=20)
    parser.add_argument("--sandbox-seed", type=int, default=7)
    _add_content_arg(parser, "--sandbox-content")


def _add_content_arg(parser: argparse.ArgumentParser, flag: str, default: str = "speech") -> None:
    parser.add_argument(
        flag,
        choices=("speech", "tones"),
        default=default,
        help="what the sandbox's calls hold: speech (espeak-ng's voice with ring-back, holds, "
        "noise-only and music-only calls; tones when espeak-ng is missing) or tones",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calltexts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="materialize every asset for a period (one run over the range)",
        description="Without Bitrix24 credentials in the environment this starts the "
        "sandbox portal and STT server on loopback and exports their synthetic calls.",
    )
    _add_period_args(run)
    run.add_argument("--summaries", action="store_true", help="also write call summaries")

    estimate = commands.add_parser(
        "estimate",
        help="the period's calls, billable minutes and cost before anything is spent",
        description="Lists the period's calls (the sandbox's without credentials) and prints "
        "calls, billable minutes and cost in USD and RUB, and how much is already done.",
    )
    _add_period_args(estimate)

    dev = commands.add_parser(
        "dev", help="dagster dev (UI + daemon) and the API, with the sandbox if needed"
    )
    _add_sandbox_args(dev, days=60, calls_per_day=20)
    _add_content_arg(dev, "--content")
    dev.add_argument("--ui-port", type=int, default=3000, help="the Dagster UI's port")
    dev.add_argument("--api-port", type=int, default=8080, help="the HTTP API's port")

    sandbox = commands.add_parser("sandbox", help="the Bitrix24 and STT emulators")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    serve = sandbox_commands.add_parser("serve", help="serve both emulators on loopback")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--portal-port", type=int, default=8724)
    serve.add_argument("--stt-port", type=int, default=8725)
    serve.add_argument("--storage-port", type=int, default=0, help="recordings' host (0: any)")
    serve.add_argument(
        "--public-host",
        help="the name clients reach --host by, required when --host is not loopback (the "
        "sandbox as a service of the Docker stack: --host 0.0.0.0 --public-host sandbox)",
    )
    serve.add_argument("--stt-latency-ms", type=float, default=0, help="STT time per audio minute")
    serve.add_argument(
        "--stt-flavour",
        choices=("openai", "speaches", "localai"),
        default="openai",
        help="which server the STT emulator answers as (models Systran/... and ggml-... "
        "are answered as speaches and LocalAI whatever this says)",
    )
    serve.add_argument(
        "--download-metered",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether the portal counts Drive downloads in its request-rate limit like REST "
        "calls (default: yes; undocumented for Bitrix24, docs/specs/bitrix24_downloads.md)",
    )
    _add_sandbox_args(serve, days=60, calls_per_day=150)
    _add_content_arg(serve, "--content", default="tones")  # the stack's smoke test: tones
    seed = sandbox_commands.add_parser("seed", help="re-seed a running sandbox portal")
    seed.add_argument("--portal-url", default="http://127.0.0.1:8724")
    _add_sandbox_args(seed, days=60, calls_per_day=150)

    api = commands.add_parser("api", help="the HTTP trigger API")
    api_commands = api.add_subparsers(dest="api_command", required=True)
    api_serve = api_commands.add_parser("serve")
    api_serve.add_argument("--host", default="127.0.0.1")
    api_serve.add_argument("--port", type=int, default=8080)
    token = api_commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create",
        help="a new token: prints its secret once and the line to add to the token file",
    )
    create.add_argument("name", help="who holds it, e.g. crm-integration")
    create.add_argument(
        "--scopes",
        required=True,
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        help=f"comma separated, some of {', '.join(API_SCOPES)}",
    )

    audit = commands.add_parser("audit", help="print the audit journal as a table")
    audit.add_argument("--since", default="7d", help="7d, 12h, 30m or YYYY-MM-DD (default 7d)")

    retention = commands.add_parser("retention", help="delete exports past their retention")
    retention.add_argument("--dry-run", action="store_true")

    backup = commands.add_parser(
        "backup", help="back up the ledger (consistently, runs may be writing) and local storage"
    )
    backup.add_argument("target", type=Path, help="folder the backup is made in")
    restore = commands.add_parser(
        "restore", help="restore a backup into the (empty) home and ledger of the environment"
    )
    restore.add_argument("backup", type=Path, help="a calltexts_backup_<stamp> folder")
    restore.add_argument("--force", action="store_true", help="restore over existing files")
    return parser


class _Refused(Exception):
    """The command cannot start; the message is one line for the user (exit code 2)."""


def _checked_settings(command: str) -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise _Refused(f"invalid settings:\n{exc}") from None
    problems = environment_problems(settings, ledger_readable=command != "restore")
    if problems:
        raise _Refused("\n".join(problems))
    return settings


@contextlib.contextmanager
def _portal(args: argparse.Namespace, settings: Settings) -> Iterator[tuple[date, date]]:
    """The command's period, and the sandbox portal when no credentials are set."""
    try:
        period_from, period_to = export_period(
            settings, args.period_from, args.period_to, args.days
        )
    except PeriodError as exc:
        raise _Refused(str(exc)) from None
    if settings.credentials_configured:
        yield period_from, period_to
        return
    # Here, not at the top: a portal with credentials needs no emulators (starlette, uvicorn).
    from calltexts_sandbox.runtime import available_content, sandbox_environment

    days = (period_to - period_from).days + 1
    print(f"No Bitrix24 credentials set: using the SANDBOX portal ({days} days of synthetic calls)")
    content, note = available_content(args.sandbox_content)
    if note:
        print(note)
    with sandbox_environment(
        seed=args.sandbox_seed,
        start=period_from,
        days=days,
        calls_per_day=args.sandbox_calls_per_day,
        content=content,
    ):
        yield period_from, period_to


def _models_checked(settings: Settings, *, summaries: bool) -> None:
    """Print a warning per model that shuts down within 60 days; refuse (exit 2) when one
    is past its date."""
    refused, warned = model_problems(configured_model_notices(settings, summaries=summaries))
    for line in warned:
        print(f"warning: {line}", file=sys.stderr)
    if refused:
        raise _Refused("\n".join(refused))


def _checked_instance(settings: Settings) -> None:
    """DAGSTER_HOME, for the commands that open the Dagster instance (`run`, `dev`)."""
    problem = instance_problem(settings)
    if problem:
        raise _Refused(problem)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from calltexts_assets.ops.export_run import run_export

    try:  # a period that cannot be exported is said first
        export_period(settings, args.period_from, args.period_to, args.days)
    except PeriodError as exc:
        raise _Refused(str(exc)) from None
    _checked_instance(settings)
    with _portal(args, settings) as (period_from, period_to):
        # the sandbox (if any) pointed the environment at itself: read it again
        current = load_settings()
        _models_checked(current, summaries=args.summaries or current.summaries_enabled)
        return run_export(period_from, period_to, summaries=args.summaries)


def _cmd_estimate(args: argparse.Namespace, settings: Settings) -> int:
    from calltexts_assets.api.estimate import estimate_period

    with _portal(args, settings) as (period_from, period_to):
        current = load_settings()
        _models_checked(current, summaries=current.summaries_enabled)
        for line in estimate_period(current, period_from, period_to).lines():
            print(line)
    return 0


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


def _cmd_sandbox_serve(args: argparse.Namespace) -> int:
    from calltexts_sandbox.runtime import available_content, start_sandbox

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public_host:
        raise _Refused(
            f"sandbox serve --host {args.host}: the sandbox listens on loopback only; add "
            "--public-host <the name clients reach it by> to serve it on another address"
        )
    start = portal_today() - timedelta(days=args.days)
    content, note = available_content(args.content)
    if note:
        print(note)
    sandbox = start_sandbox(
        seed=args.seed,
        start=start,
        days=args.days,
        calls_per_day=args.calls_per_day,
        host=args.host,
        portal_port=args.portal_port,
        stt_port=args.stt_port,
        stt_options={
            "flavour": args.stt_flavour,
            "latency_per_audio_min_sec": args.stt_latency_ms / 1000,
        },
        public_host=args.public_host,
        storage_port=args.storage_port,
        content=content,
        portal_config={"download_metered": args.download_metered},
    )
    print(f"SANDBOX Bitrix24 portal: {sandbox.portal_url}")
    if not args.download_metered:
        print("Drive downloads are not counted in the portal's request-rate limit")
    print(f"SANDBOX STT server:      {sandbox.stt_url}")
    print("Use these variables:")
    for name, value in (sandbox.environment() | sandbox.model_defaults(content)).items():
        print(f"export {name}={value}")
    _wait_for_interrupt()
    sandbox.stop()
    return 0


def _cmd_sandbox_seed(args: argparse.Namespace) -> int:
    import httpx

    start = portal_today() - timedelta(days=args.days)
    body = {
        "seed": args.seed,
        "start": start.isoformat(),
        "days": args.days,
        "calls_per_day": args.calls_per_day,
    }
    response = httpx.post(f"{args.portal_url.rstrip('/')}/_sandbox/seed", json=body, timeout=60)
    response.raise_for_status()
    print(f"seeded {args.days} days x {args.calls_per_day} calls from {start} (seed {args.seed})")
    return 0


def _cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from calltexts_assets.ops.dev import PortsBusy, run_dev

    _checked_instance(settings)
    try:
        return run_dev(
            settings,
            ui_port=args.ui_port,
            api_port=args.api_port,
            sandbox_days=args.days,
            calls_per_day=args.calls_per_day,
            seed=args.seed,
            content=args.content,
        )
    except PortsBusy as exc:
        raise _Refused(str(exc)) from None


def _cmd_api(args: argparse.Namespace) -> int:
    from calltexts_assets.api.server import Refused, serve

    try:
        serve(args.host, args.port)
    except Refused as exc:
        raise _Refused(str(exc)) from None
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from calltexts_assets.api.tokens import new_token

    try:
        secret, line = new_token(args.name, args.scopes, datetime.now(UTC).date())
    except ValueError as exc:
        raise _Refused(f"{args.name}: {exc}") from None
    print(f"Token {args.name} (shown once: give it to its holder, it is stored nowhere):")
    print(f"  {secret}")
    print("Add this line to CALLTEXTS_API_TOKENS_FILE (or CALLTEXTS_API_TOKENS), restart the API:")
    print(f"  {line}")
    return 0


def _cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import make_url

    from calltexts_assets.state.audit import AuditJournal, since_start, table_lines
    from calltexts_assets.state.ledger import database_engine

    now = datetime.now(UTC)
    try:
        start = since_start(args.since, now)
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    url = settings.ledger_url()
    if url.startswith("sqlite") and not Path(make_url(url).database or "").exists():
        events = []  # looking must not create the file a restore wants absent
    else:
        events = AuditJournal(database_engine(url), None, create=False).since(start)
    if not events:
        print(f"No audit entries since {start:%Y-%m-%d %H:%M} UTC.")
        return 0
    for line in table_lines(events):
        print(line)
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from calltexts_assets.ops.retention import run_retention_job

    return run_retention_job(dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_dagster_environment()  # inherited by `dagster dev` (webserver, daemon) too
    try:
        return _dispatch(args)
    except _Refused as exc:
        print(f"calltexts {args.command}: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    settings = _checked_settings(args.command)  # every setting checked before any work
    if args.command == "run":
        return _cmd_run(args, settings)
    if args.command == "estimate":
        return _cmd_estimate(args, settings)
    if args.command == "dev":
        return _cmd_dev(args, settings)
    if args.command == "sandbox":
        if args.sandbox_command == "serve":
            return _cmd_sandbox_serve(args)
        return _cmd_sandbox_seed(args)
    if args.command == "api":
        if args.api_command == "token":
            return _cmd_token_create(args)
        return _cmd_api(args)
    if args.command == "audit":
        return _cmd_audit(args, settings)
    if args.command in ("backup", "restore"):
        return _cmd_backup_or_restore(args, settings)
    return _cmd_retention(args)


def _cmd_backup_or_restore(args: argparse.Namespace, settings: Settings) -> int:
    from calltexts_assets.ops.backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            made = backup(settings, args.target)
            print(f"Backed up the {made.ledger} ledger and {made.files} files to {made.path}")
        else:
            made = restore(args.backup, settings, force=args.force)
            print(f"Restored the {made.ledger} ledger and {made.files} files from {made.path}")
    except BackupError as exc:
        # A refused restore writes nothing: its target must stay empty for the next try.
        if args.command == "backup":
            _journal(settings, "backup", "refused", {"folder": args.target.name})
        raise _Refused(str(exc)) from None
    detail = {"folder": made.path.name, "ledger": made.ledger, "files": made.files}
    # A restore is journalled in the ledger it restored: the line follows the backup's own.
    _journal(settings, args.command, "done", detail)
    return 0


def _journal(settings: Settings, event: str, outcome: str, detail: dict) -> None:
    from calltexts_assets.state.audit import AuditEvent, AuditJournal, os_user
    from calltexts_assets.state.ledger import database_engine

    try:
        journal = AuditJournal(database_engine(settings.ledger_url()), settings.log_dir)
        journal.record(AuditEvent(event, os_user(), "cli", outcome, detail=detail))
    except Exception as exc:  # the database itself is unreachable: say so, keep the result
        print(f"calltexts {event}: not journalled ({type(exc).__name__})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
