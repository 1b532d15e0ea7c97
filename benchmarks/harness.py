"""What the benchmarks share: a sandbox with an on-disk audio cache, a timed warm-up that
renders the recordings, export runs in a child process (the `calltexts run` code path)
with their CPU, memory and request figures, and a loopback bandwidth probe.

The sandbox (portal + STT emulator) runs in this process; the pipeline runs in a child, so
its CPU time and peak RSS are its own and the emulators' costs are reported apart.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/<script>.py`
    sys.path.insert(0, str(REPO_ROOT))

import dagster  # noqa: E402
import psutil  # noqa: E402

# The assets' beta parameters (backfill_policy) warn at import; figures are the output here.
warnings.filterwarnings("ignore", category=dagster.BetaWarning)
warnings.filterwarnings("ignore", category=dagster.PreviewWarning)

from calltexts_assets.settings import portal_today  # noqa: E402
from calltexts_assets.state.ledger import Ledger  # noqa: E402
from calltexts_sandbox.calls.seed import (  # noqa: E402
    SeedSpec,
    recording_format,
    recording_is_stereo,
)
from calltexts_sandbox.portal.files import SPEECH, TONES, AudioCache, renderer_for  # noqa: E402
from calltexts_sandbox.portal.state import Portal, PortalConfig  # noqa: E402
from calltexts_sandbox.runtime import SANDBOX_API_KEY, Sandbox, start_sandbox  # noqa: E402
from calltexts_sandbox.server import RunningServer, serve_in_thread  # noqa: E402
from calltexts_sandbox.stt.app import SttEmulator  # noqa: E402
from calltexts_sandbox.stt.hearing import Heard, HeardCache  # noqa: E402
from calltexts_tests.support.child_run import ChildLayout, child_env, start_child  # noqa: E402

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache" / "audio"
HEARD_CACHE = DEFAULT_CACHE.parent  # what the STT emulator hears in each recording
SEED = 7  # the CLI's default sandbox seed
# Whole recordings to the STT (STT_SEND=all), one request per call, so its time per call is
# its audio's: the sandbox's tone calls hold no speech for the voice detector of the default
# model's turns and of STT_SEND=speech, which would send almost nothing (benchmarks/turns.py).
WHOLE_RECORDINGS = {"WHISPER_MODEL": "whisper-1", "STT_ROLE_MODE": "energy", "STT_SEND": "all"}


# -- the period and its calls ---------------------------------------------------------------


def period_ending_yesterday(days: int) -> tuple[date, date]:
    """The last `days` full days, as `calltexts run --days N` picks them."""
    last = portal_today() - timedelta(days=1)
    return last - timedelta(days=days - 1), last


@dataclass(frozen=True)
class Workload:
    spec: SeedSpec
    rows: list[dict[str, Any]]

    @classmethod
    def seed(cls, first: date, days: int, calls_per_day: int) -> Workload:
        spec = SeedSpec(SEED, first, days, calls_per_day)
        return cls(spec, spec.rows())

    @property
    def with_audio(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("RECORD_FILE_ID")]

    @property
    def audio_minutes(self) -> float:
        return sum(int(r["CALL_DURATION"]) for r in self.with_audio) / 60

    def describe(self) -> str:
        durations = sorted(int(r["CALL_DURATION"]) for r in self.with_audio)
        stereo = sum(recording_is_stereo(r["CALL_ID"]) for r in self.with_audio)
        median = durations[len(durations) // 2] if durations else 0
        return (
            f"{len(self.rows)} calls ({self.spec.days} days x {self.spec.calls_per_day}), "
            f"{len(durations)} with a recording ({stereo} stereo), "
            f"{self.audio_minutes:,.0f} audio minutes; duration median {median} s, "
            f"max {durations[-1] if durations else 0} s, "
            f"{sum(d >= 1200 for d in durations)} at the 20-min cap"
        )


# -- warm-up: render every recording into the on-disk cache ---------------------------------

_worker_cache: AudioCache | None = None
_worker_heard: HeardCache | None = None


def _render_init(cache_dir: str, version: str, heard_root: str, content: str) -> None:
    global _worker_cache, _worker_heard
    _worker_cache = AudioCache(renderer_for(content), cache_dir, 0, version)
    _worker_heard = HeardCache(Path(heard_root), speech=content == SPEECH)


def _render_one(job: tuple[str, int]) -> tuple[int, int]:
    """(rendered now, listened to now) for one recording."""
    call_id, duration = job
    assert _worker_cache is not None and _worker_heard is not None
    before = _worker_cache.renders
    fmt = recording_format(call_id)
    found = _worker_cache.open(call_id, duration, recording_is_stereo(call_id), fmt)
    assert isinstance(found, Path)  # no memory budget here: every recording is a file
    return _worker_cache.renders - before, int(_worker_heard.fill(found))


def warm_audio_cache(
    workload: Workload,
    cache_dir: Path,
    workers: int,
    heard_root: Path = HEARD_CACHE,
    content: str = TONES,
) -> tuple[float, int, int]:
    """Render what the portal will serve into `cache_dir` (the portal's own cache format and
    keys), and listen to each recording as the STT emulator will (`HeardCache`, by content);
    returns (seconds, recordings rendered now, listened to now). Done ones are skipped."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The portal reads CALL_DURATION as int(float(...)), and keys the cache on it.
    jobs = sorted(
        ((r["CALL_ID"], int(float(r["CALL_DURATION"]))) for r in workload.with_audio),
        key=lambda job: -job[1],  # longest first: even load across the workers
    )
    started = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    portal = Portal([], PortalConfig(cache_dir=str(cache_dir), content=content), [],
                    renderer_for(content), time.monotonic)  # fmt: skip
    initargs = (str(cache_dir), portal.audio.version, str(heard_root), content)
    with ctx.Pool(workers, initializer=_render_init, initargs=initargs) as pool:
        done = list(pool.imap_unordered(_render_one, jobs, chunksize=8))
    return time.monotonic() - started, sum(r for r, _ in done), sum(h for _, h in done)


# -- the sandbox ------------------------------------------------------------------------------


def start_benchmark_sandbox(
    workload: Workload,
    cache_dir: Path,
    *,
    portal_rate: float = 2.0,
    content: str = TONES,
    download_metered: bool = True,
) -> Sandbox:
    """Portal with its leaky bucket at `portal_rate` req/s (Bitrix24's 2), audio from the
    cache; `download_metered`: Drive downloads pass the bucket too (the default, the
    conservative reading of docs/specs/bitrix24_downloads.md). The STT server of each run is
    started by `fresh_stt` instead."""
    spec = workload.spec
    return start_sandbox(
        seed=spec.seed,
        start=spec.start,
        days=spec.days,
        calls_per_day=spec.calls_per_day,
        cache_dir=cache_dir,
        portal_config={"rate_per_sec": portal_rate, "download_metered": download_metered},
        content=content,
    )


@contextmanager
def fresh_stt(
    latency_per_min: float,
    kind: type[SttEmulator] = SttEmulator,
    heard_cache: HeardCache | None = None,
    fixed_latency_sec: float = 0.0,
) -> Iterator[tuple[SttEmulator, RunningServer]]:
    """A new STT emulator per run, so its counters are that run's."""
    emulator = kind(
        api_key=SANDBOX_API_KEY,
        latency_per_audio_min_sec=latency_per_min,
        fixed_latency_sec=fixed_latency_sec,
        heard_cache=heard_cache,
    )
    server = serve_in_thread(emulator.app)
    try:
        yield emulator, server
    finally:
        server.stop()


# -- cheap stand-ins for the memory benchmark (scale.py) --------------------------------------

_FRAME_BYTES = 144  # MPEG-2 layer III, 16 kHz mono, 32 kbps CBR: 144-byte frames, no padding
_FRAME_SEC = 576 / 16000


class SlicedRecordings:
    """Portal audio for calls of any length without rendering each: slices of one mono
    CBR MP3 (a 700 Hz tone, no Xing header), cut at frame boundaries. Valid MP3 whose
    header duration is the call's; the pipeline handles it like any mono recording."""

    def __init__(self, max_sec: int = 1210) -> None:
        from calltexts_assets.audio.decode import ffmpeg_exe

        source = f"sine=frequency=700:sample_rate=16000:duration={max_sec}"
        self.base = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source,
             "-ac", "1", "-c:a", "libmp3lame", "-b:a", "32k", "-write_xing", "0",
             "-id3v2_version", "0", "-f", "mp3", "pipe:1"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip

    def open(self, call_id: str, duration_sec: int, stereo: bool) -> bytes:
        frames = max(1, round(duration_sec / _FRAME_SEC))
        return self.base[: frames * _FRAME_BYTES]


class HeaderOnlyStt(SttEmulator):
    """The STT emulator with its listening part replaced: the duration comes from the
    file's header and the 'words' are one every 3 s. Same HTTP API, latency, stats; no decode."""

    def _listen(self, path: Path) -> Heard:
        from calltexts_assets.audio.decode import probe
        from calltexts_sandbox.calls.script import VOCABULARY
        from calltexts_sandbox.calls.tones import HeardWord

        duration = probe(path).duration_sec
        starts = [i * 3.0 for i in range(max(1, int(duration // 3)))]
        words = [
            HeardWord(t, min(t + 0.5, duration), VOCABULARY[i % len(VOCABULARY)], None)
            for i, t in enumerate(starts)
        ]
        return Heard(duration, words)


# -- one export run in a child process --------------------------------------------------------


@dataclass
class RunFigures:
    label: str
    calls: int
    wall_sec: float  # child start to exit (Python start-up and Dagster load included)
    run_sec: float  # run_export alone
    exit_code: int
    child: dict[str, Any]  # the child's own rusage report (pipeline_subprocess --stats-json)
    peak_rss_tree_mib: float  # sampled: pipeline process + its ffmpeg children
    sandbox_cpu_sec: float  # emulators (this process) and their ffmpeg decodes
    portal: dict[str, Any]
    stt: dict[str, Any]
    ledger_rows: int = 0
    ledger_bytes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    download_bytes: int = 0
    cost_usd: float = 0.0  # the registry's: the ledger's cost of every call of the period
    home: Path | None = None  # the child's storage root (transcripts under exports/)
    load_average: float = 0.0  # the machine's mean 1-minute load average during the run
    started_at: float = 0.0  # time.monotonic() of this process when the child was started

    @property
    def pipeline_cpu_sec(self) -> float:
        c = self.child
        return c["cpu_user_sec"] + c["cpu_sys_sec"] + c["children_cpu_sec"]

    @property
    def cpu_floor_sec(self) -> float:
        """The least wall time the CPU work (pipeline and emulators) takes on this machine."""
        return (self.pipeline_cpu_sec + self.sandbox_cpu_sec) / (os.cpu_count() or 1)


class _RssSampler(threading.Thread):
    """Peak RSS of a process tree, sampled (ru_maxrss gives the exact peak per process), and
    the machine's 1-minute load average meanwhile (other sessions sharing the cores)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.loads: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._halt.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for proc in tree:
                    with suppress(psutil.NoSuchProcess):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
                self.loads.append(os.getloadavg()[0])
            except psutil.NoSuchProcess:
                return
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _cpu_of_this_process() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_export_child(
    label: str,
    sandbox: Sandbox,
    root: Path,
    first: date,
    last: date,
    *,
    concurrency: int,
    stt_latency_per_min: float,
    requests_per_second: float = 2.0,
    py_spy: Path | None = None,
    stt_kind: type[SttEmulator] = SttEmulator,
    heard_cache: HeardCache | None = None,
    extra_env: dict[str, str] | None = None,
    stt_fixed_latency_sec: float = 0.0,
    profile: Path | None = None,
    tree: Path | None = None,
) -> RunFigures:
    """One `calltexts run --from first --to last` in a child against the sandbox
    (`extra_env`: settings of this run, e.g. the STT model)."""
    layout = ChildLayout.under(root)
    sandbox.portal.reset_stats()
    with fresh_stt(stt_latency_per_min, stt_kind, heard_cache, stt_fixed_latency_sec) as (
        stt,
        stt_server,
    ):
        env = child_env(
            layout,
            webhook_url=sandbox.webhook_url,
            stt_base_url=f"{stt_server.url}/v1",
            api_key=SANDBOX_API_KEY,
            concurrency=concurrency,
            requests_per_second=requests_per_second,
            extra={**({"PYTHONPATH": str(tree)} if tree else {}), **(extra_env or {})},
        )
        stats_path = root / f"{label}.stats.json"
        stats_path.unlink(missing_ok=True)
        cpu_before = _cpu_of_this_process()
        started = time.monotonic()
        child = start_child(
            first,
            last,
            env,
            log_path=root / f"{label}.log",
            stats_path=stats_path,
            profile_path=profile,
            tree=tree or REPO_ROOT,
        )
        sampler = _RssSampler(child.pid)
        sampler.start()
        spy = _start_py_spy(child.pid, py_spy) if py_spy else None
        code = child.wait()
        if spy is not None:
            spy.wait()
        wall = time.monotonic() - started
        sampler.stop()
        child_stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        pipeline_cpu = sum(
            child_stats.get(k, 0.0) for k in ("cpu_user_sec", "cpu_sys_sec", "children_cpu_sec")
        )
        # This process's children include the pipeline child once it is reaped.
        sandbox_cpu = _cpu_of_this_process() - cpu_before - pipeline_cpu
        stt_stats = stt.stats()
    ledger = Ledger(layout.ledger_url)
    try:
        records = ledger.records([d.isoformat() for d in _days(first, last)])
        rows = ledger.count_rows()
    finally:
        ledger.dispose()
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    db_path = layout.home / "ledger.sqlite"
    db_bytes = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*") if p.is_file())
    return RunFigures(
        label=label,
        calls=len(records),
        wall_sec=wall,
        run_sec=child_stats.get("run_sec", float("nan")),
        exit_code=code,
        child=child_stats,
        peak_rss_tree_mib=sampler.peak / 2**20,
        sandbox_cpu_sec=sandbox_cpu,
        portal=sandbox.portal.stats(),
        stt=stt_stats,
        ledger_rows=rows,
        ledger_bytes=db_bytes,
        statuses=dict(sorted(statuses.items())),
        download_bytes=sum(r.audio_bytes or 0 for r in records),
        cost_usd=sum(r.cost or 0.0 for r in records),
        home=layout.home,
        load_average=sum(sampler.loads) / len(sampler.loads) if sampler.loads else 0.0,
        started_at=started,
    )


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample the pipeline's Python threads (not its ffmpeg children) into collapsed stacks."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "50"]
    return subprocess.Popen(
        [*cmd, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: lines of one function merged."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({match['path'].rsplit('/', 1)[-1]})"


# py-spy names frames by module-relative file; the project's modules are known by name.
_PROJECT_FILES = {
    p.name for p in (REPO_ROOT / "calltexts_assets").rglob("*.py") if p.name != "__init__.py"
}


def _is_project(name: str) -> bool:
    return name.endswith(")") and name.rsplit("(", 1)[-1][:-1] in _PROJECT_FILES


def top_frames(raw: Path, count: int = 8) -> tuple[list[tuple[str, float]], ...]:
    """From py-spy's collapsed stacks: (share of samples per project function, inclusive;
    share per leaf function, i.e. self time). Idle waits (ffmpeg, sockets) are not sampled,
    so these split the pipeline's Python CPU, not its wall time."""
    inclusive: dict[str, int] = {}
    leaves: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack:
            continue
        weight = int(n)
        samples += weight
        frames = [f for f in stack.split(";") if " (" in f]
        if frames:
            leaf = _frame_name(frames[-1])
            leaves[leaf] = leaves.get(leaf, 0) + weight
        for name in {n for n in map(_frame_name, frames) if _is_project(n)}:
            inclusive[name] = inclusive.get(name, 0) + weight

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        top = sorted(table.items(), key=lambda kv: -kv[1])[:count]
        return [(name, n / samples) for name, n in top]

    return (ranked(inclusive), ranked(leaves)) if samples else ([], [])


def print_top_frames(raw: Path, count: int = 8) -> None:
    """py-spy's collapsed stacks of a child, as `top_frames` ranks them."""
    inclusive, leaves = top_frames(raw, count)
    print("    py-spy (pipeline's Python threads), project functions, inclusive:")
    for name, share in inclusive:
        print(f"      {share:6.1%}  {name}")
    print("    py-spy, self time (leaf functions):")
    for name, share in leaves:
        print(f"      {share:6.1%}  {name}")


def run_main(main: Callable[[], int]) -> NoReturn:
    """A benchmark's entry point: its exit code, after its wall time."""
    started = time.monotonic()
    code = main()
    print(f"\nbenchmark finished in {time.monotonic() - started:,.0f} s")
    sys.exit(code)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass
class ScriptFigures:
    """A plain script run as a child: its wall time, its CPU (with its own children) from
    wait4, its peak RSS (sampled: wait4's counts the parent's pages the fork shared before
    the exec), and the machine's mean 1-minute load average meanwhile."""

    wall_sec: float
    cpu_sec: float
    peak_rss_mib: float
    exit_code: int
    load_average: float


def run_script_child(cmd: list[str], env: dict[str, str], log_path: Path) -> ScriptFigures:
    with log_path.open("wb") as log:
        started = time.monotonic()
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = _RssSampler(child.pid)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        sampler.stop()
        child.returncode = os.waitstatus_to_exitcode(status)
    return ScriptFigures(
        wall_sec=wall,
        cpu_sec=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=sampler.peak / 2**20,
        exit_code=child.returncode,
        load_average=sum(sampler.loads) / len(sampler.loads) if sampler.loads else 0.0,
    )


# -- the bound of a run -----------------------------------------------------------------------


def lower_bound(
    fig: RunFigures,
    *,
    latency_per_min: float,
    concurrency: int,
    rps: float,
    bandwidth: float,
    downloads_rated: bool = True,
) -> tuple[float, dict[str, float]]:
    """max(STT latency / concurrency, REST requests / rate, download bytes / bandwidth). Drive
    downloads count in the REST requests when they wait for a rate (`downloads_rated`: the
    client paces them or the portal meters them); a refused request is not counted."""
    stt_latency = latency_per_min * fig.stt["audio_seconds"] / 60
    left_out = {"records"} if downloads_rated else {"records", "download"}
    rest = sum(n for name, n in fig.portal["http_requests"].items() if name not in left_out)
    rest -= fig.portal["rate_limited"]
    label = "REST requests" if downloads_rated else "REST requests but Drive downloads"
    parts = {
        "STT latency / concurrency": stt_latency / concurrency,
        f"{label} / {rps:g} rps": rest / rps,
        "download bytes / loopback bandwidth": fig.download_bytes / bandwidth,
    }
    return max(parts.values()), parts


# -- loopback bandwidth -----------------------------------------------------------------------


def loopback_bandwidth(total_mib: int = 512, chunk: int = 1 << 20) -> float:
    """Bytes per second through one TCP connection on 127.0.0.1 (sender and receiver in
    two threads of this process): the ceiling for moving recordings over loopback."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = 0

    def receive() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            buf = bytearray(chunk)
            while (n := conn.recv_into(buf)) > 0:
                received += n

    reader = threading.Thread(target=receive)
    reader.start()
    payload = os.urandom(chunk)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        for _ in range(total_mib):
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reader.join()
        elapsed = time.monotonic() - started
    server.close()
    return received / elapsed


# -- reporting ---------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem:.1f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def print_run(fig: RunFigures, *, audio_minutes: float) -> None:
    c = fig.child
    per_call = fig.pipeline_cpu_sec / fig.calls if fig.calls else float("nan")
    print(f"  [{fig.label}] exit code {fig.exit_code}; calls by status {fig.statuses}")
    print(
        f"    wall {fig.wall_sec:,.1f} s (process start to exit; run_export alone "
        f"{fig.run_sec:,.1f} s, Python+Dagster import {c.get('import_sec', 0):.1f} s)"
    )
    python_cpu = c.get("cpu_user_sec", 0) + c.get("cpu_sys_sec", 0)
    per_minute = (
        f", {fig.pipeline_cpu_sec / audio_minutes:.3f} s per audio minute" if audio_minutes else ""
    )
    print(
        f"    pipeline CPU {fig.pipeline_cpu_sec:,.1f} s = python {python_cpu:,.1f} s"
        f" + ffmpeg children {c.get('children_cpu_sec', 0):,.1f} s; "
        f"{per_call * 1000:,.0f} ms CPU per call{per_minute}"
    )
    print(
        f"    sandbox CPU (portal + STT emulator, not the pipeline's) "
        f"{fig.sandbox_cpu_sec:,.1f} s; CPU floor (pipeline + sandbox CPU) / "
        f"{os.cpu_count() or 1} cores = {fig.cpu_floor_sec:,.1f} s"
    )
    print(
        f"    peak RSS: pipeline process {c.get('peak_rss_mib', 0):,.0f} MiB (VmHWM), "
        f"process tree with ffmpeg children {fig.peak_rss_tree_mib:,.0f} MiB (sampled)"
    )
    print(
        f"    machine load average during the run {fig.load_average:.1f} on "
        f"{os.cpu_count() or 1} cores (above ~2-3: other processes shared the cores)"
    )
    print(f"    ledger: {fig.ledger_rows} rows, {mib(fig.ledger_bytes)} on disk")
    p = fig.portal
    print(
        f"    portal requests: HTTP {p['http_requests']}, REST commands {p['requests']}, "
        f"responses {p['responses']}, refused by its rate limit {p['rate_limited']}"
    )
    s = fig.stt
    print(
        f"    STT requests: {s['requests']} ({s['transcriptions']} transcriptions, "
        f"{s['decodes']} decodes, {s['audio_seconds'] / 60:,.0f} audio minutes sent, "
        f"{mib(s['bytes_received'])} uploaded, by status {s['by_status']}, "
        f"max in flight {s['max_in_flight']}; billed {s['billed_minutes']:,} minutes)"
    )


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- what the STT was sent, against the calls ----------------------------------------------------


def print_stt_ratios(fig: RunFigures, workload: Workload, price_per_minute: float) -> None:
    """The issue's measures of one run: audio sent / call audio, bytes uploaded / recording
    bytes, and the registry's cost against what the emulator would bill."""
    sent_min = fig.stt["audio_seconds"] / 60
    uploaded = fig.stt["bytes_received"]
    # whisper-1 is billed per second (docs/specs/stt_wire.md §3.4); the requirements'
    # formula (started minutes) is printed beside it.
    bill = fig.stt["billed_seconds"] * price_per_minute / 60
    formula = fig.stt["billed_minutes"] * price_per_minute
    print(
        f"    call audio minutes {workload.audio_minutes:,.0f}; audio minutes sent to the STT "
        f"{sent_min:,.0f}: ratio {sent_min / workload.audio_minutes:.3f}"
    )
    print(
        f"    {mib(fig.download_bytes)} downloaded (recordings), {mib(uploaded)} uploaded "
        f"(to the STT): ratio {uploaded / max(fig.download_bytes, 1):.3f}"
    )
    verdict = "EQUAL" if abs(fig.cost_usd - bill) < 0.005 else "DIFFERENT"
    print(
        f"    registry cost {fig.cost_usd:,.4f} USD; the emulator would bill "
        f"{fig.stt['billed_seconds']:,} s x {price_per_minute} / 60 = {bill:,.4f} USD: {verdict} "
        f"(per started minute: {fig.stt['billed_minutes']:,} min = {formula:,.4f} USD)"
    )


_LINE = re.compile(r"^\[[\d:]+\] (Оператор|Клиент|Собеседник)(?: \S+)?: (.*)$")
_ROLE = {"Оператор": "operator", "Клиент": "client"}


def role_accuracy(fig: RunFigures, workload: Workload) -> tuple[int, int, int, int]:
    """(words under the right role, words, of them cross-talk words right, cross-talk words)
    over the stereo calls transcribed in the run, against the sandbox's ground truth (each
    call's script: who says which word). A word is right when the transcript has it, in
    order, among the lines of the role that said it."""
    from difflib import SequenceMatcher

    from calltexts_assets.files.storage_keys import transcript_key
    from calltexts_sandbox.calls.script import call_script

    right = total = cross_right = cross_total = 0
    for row in workload.with_audio:
        call_id = row["CALL_ID"]
        if not recording_is_stereo(call_id):
            continue
        started = datetime.fromisoformat(row["CALL_START_DATE"])
        path = fig.home / transcript_key(call_id, started) if fig.home else None
        if path is None or not path.exists():
            continue
        heard: dict[str, list[str]] = {"operator": [], "client": []}
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _LINE.match(line)
            if match and match[1] in _ROLE:
                heard[_ROLE[match[1]]] += match[2].split()
        script = call_script(call_id, int(float(row["CALL_DURATION"])), True)
        crossing = {id(w) for w in script.overlapped()}
        for role in ("operator", "client"):
            said = script.words(role)
            matcher = SequenceMatcher(None, [w.text for w in said], heard[role], autojunk=False)
            found = {i + k for i, _, n in matcher.get_matching_blocks() for k in range(n)}
            total += len(said)
            right += len(found)
            for i, word in enumerate(said):
                if id(word) in crossing:
                    cross_total += 1
                    cross_right += i in found
    return right, total, cross_right, cross_total
