"""Run the export in a child process, the way `calltexts run --from --to` runs it.

The parent (a test or a benchmark) hosts the sandbox emulators and keeps their counters;
the child imports the project, builds its resources from the environment and runs
`export_run.run_export` (one Dagster run over the range, range tags) against a given
Dagster home, ledger and storage root. A child can be killed with SIGKILL at any moment
and started again on the same directories.

    python -m calltexts_tests.support.child_run --from 2026-11-01 --to 2026-11-02 \
        --stats-json stats.json      # environment from `child_env(...)`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Variables a developer's shell may hold that must not leak into a sandboxed child.
_SCRUBBED_PREFIXES = ("BITRIX24_", "OPENAI_", "CHATGPT_", "CALLTEXTS_", "DAGSTER_", "AWS_")


@dataclass(frozen=True)
class ChildLayout:
    """Where one child's state lives: storage + ledger under `home`, the Dagster instance
    under `dagster_home`, spool files of downloads under `tmp`."""

    home: Path
    dagster_home: Path
    tmp: Path

    @classmethod
    def under(cls, root: Path) -> ChildLayout:
        layout = cls(root / "home", root / "dagster_home", root / "tmp")
        for path in (layout.home, layout.dagster_home, layout.tmp):
            path.mkdir(parents=True, exist_ok=True)
        # No telemetry from sandboxed children (and no warning about a missing dagster.yaml).
        (layout.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        return layout

    @property
    def ledger_url(self) -> str:
        # The default of settings.database_url (CALLTEXTS_DATABASE_URL is left unset).
        return f"sqlite:///{self.home / 'ledger.sqlite'}"


TEST_PARTITIONS_START = "2025-01-01"


def child_env(
    layout: ChildLayout,
    *,
    webhook_url: str,
    stt_base_url: str,
    api_key: str,
    concurrency: int = 10,
    requests_per_second: float = 2.0,
    retry_scale: float = 1.0,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: the project's own configuration variables (README table),
    pointed at the sandbox the parent runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        {
            "BITRIX24_WEBHOOK_URL": webhook_url,
            "BITRIX24_REQUESTS_PER_SECOND": str(requests_per_second),
            "OPENAI_BASE_URL": stt_base_url,
            "OPENAI_API_KEY": api_key,
            "CALLTEXTS_SANDBOX": "1",
            "CALLTEXTS_RECORDING_HOSTS": "localhost",  # the sandbox's storage host
            "CALLTEXTS_HOME": str(layout.home),
            "CALLTEXTS_CONCURRENCY": str(concurrency),
            # The tests' calls are on fixed dates: partitions must not roll past them.
            "CALLTEXTS_PARTITIONS_START": TEST_PARTITIONS_START,
            "CALLTEXTS_RETRY_SCALE": str(retry_scale),
            "DAGSTER_HOME": str(layout.dagster_home),
            "TMPDIR": str(layout.tmp),  # spool files left by a kill stay where we can see them
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.update(extra or {})
    return env


def start_child(
    first: date,
    last: date,
    env: dict[str, str],
    *,
    log_path: Path,
    stats_path: Path | None = None,
    profile_path: Path | None = None,
    tree: Path = REPO_ROOT,
) -> subprocess.Popen[bytes]:
    """Start the export of [first, last] in a child; its output goes to `log_path`.
    `tree`: the source tree the child runs (a benchmark's baseline: another commit's)."""
    cmd = [
        sys.executable,
        "-m",
        "calltexts_tests.support.child_run",
        "--from",
        first.isoformat(),
        "--to",
        last.isoformat(),
    ]
    if stats_path is not None:
        cmd += ["--stats-json", str(stats_path)]
    if profile_path is not None:
        cmd += ["--profile", str(profile_path)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)


def run_child(
    first: date,
    last: date,
    env: dict[str, str],
    *,
    log_path: Path,
    stats_path: Path | None = None,
    timeout: float = 600.0,
) -> int:
    """Run the export to its end; the child's exit code (0: the Dagster run succeeded)."""
    child = start_child(first, last, env, log_path=log_path, stats_path=stats_path)
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise


def _peak_rss_mib() -> float:
    """This process's own high-water RSS. ru_maxrss would not do: Linux carries it over
    exec, so a child started from a big parent reports the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _usage() -> dict[str, Any]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # ffmpeg decodes/encodes
    return {
        "cpu_user_sec": own.ru_utime,
        "cpu_sys_sec": own.ru_stime,
        "children_cpu_sec": children.ru_utime + children.ru_stime,
        "peak_rss_mib": _peak_rss_mib(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="first", type=date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=date.fromisoformat, required=True)
    parser.add_argument("--stats-json", type=Path, help="write wall time and rusage here")
    parser.add_argument("--profile", type=Path, help="cProfile the import and run into here")
    args = parser.parse_args(argv)

    profile = None
    if args.profile is not None:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    started = time.monotonic()
    # Imported here so the import time is measured apart from the run.
    from calltexts_assets.ops.export_run import run_export

    imported = time.monotonic()
    code = run_export(args.first, args.last)
    finished = time.monotonic()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    if args.stats_json is not None:
        stats = {
            "exit_code": code,
            "import_sec": imported - started,
            "run_sec": finished - imported,
            # top-level packages loaded by the end: what the run imported, needed or not
            "packages": sorted({name.partition(".")[0] for name in sys.modules}),
            **_usage(),
        }
        args.stats_json.write_text(json.dumps(stats, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
