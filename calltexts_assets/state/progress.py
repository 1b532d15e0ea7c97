"""Progress of an export, read from the ledger: what the CLI's bar, the Dagster run log and the
API's status show while a long period runs (hours against the real services)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass

from calltexts_assets.state.ledger import Ledger, Status

# Calls that still wait for a step of this run; every other status is where a call ends.
_IN_PROGRESS = frozenset({Status.LISTED, Status.DOWNLOADED})

# Set on the log record of a progress line in the Dagster run log, so that a terminal that
# draws its own progress (`calltexts run`) can leave Dagster's copy out.
PROGRESS_RECORD = "calltexts_progress"


@dataclass(frozen=True)
class Snapshot:
    calls: int  # listed for the period
    finished: int  # in a final state: transcribed, no recording, an error
    transcribed: int
    failed: int  # download or transcription errors (a re-run retries them)
    audio_minutes: float  # of the transcribed calls
    cost_usd: float

    @property
    def percent(self) -> float:
        return 100.0 * self.finished / self.calls if self.calls else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "percent": round(self.percent, 1)}


def snapshot(ledger: Ledger, run_ids: Sequence[str]) -> Snapshot:
    totals = ledger.totals(run_ids)
    calls = sum(totals.statuses.values())
    return Snapshot(
        calls=calls,
        finished=calls - sum(totals.count(s) for s in _IN_PROGRESS),
        transcribed=totals.count(Status.TRANSCRIBED),
        failed=totals.count(Status.DOWNLOAD_ERROR) + totals.count(Status.TRANSCRIPTION_ERROR),
        audio_minutes=round(totals.transcribed_seconds / 60, 1),
        cost_usd=round(totals.transcribed_cost, 4),
    )


def clock_time(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def describe(now: Snapshot, eta_sec: float | None) -> str:
    eta = "ETA —" if eta_sec is None else f"ETA {clock_time(eta_sec)}"
    return (
        f"{now.finished}/{now.calls} calls ({now.percent:.0f} %) | {now.audio_minutes:.1f} audio "
        f"min | ${now.cost_usd:.4f} | {now.failed} failed | {eta}"
    )


def bar(now: Snapshot, eta_sec: float | None, width: int = 24) -> str:
    filled = round(width * now.percent / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {describe(now, eta_sec)}"


class ProgressWatch:
    """Reads progress every `interval` seconds in a thread and hands a line to `emit` each
    time it crosses another `every_pct` percent (`live`: every read, for a terminal's bar).
    The ETA is the pace seen since the watch started. `only_changes`: nothing is shown while
    the figures are still those read when the watch started (a re-run with nothing to do
    would show the earlier runs' minutes and cost as if they were its own); `final`: one more
    read when the watch stops, so the end of a step is in the log however short it was."""

    def __init__(
        self,
        read: Callable[[], Snapshot],
        emit: Callable[[str], None],
        *,
        every_pct: float = 5.0,
        interval: float = 2.0,
        live: bool = False,
        render: Callable[[Snapshot, float | None], str] = describe,
        clock: Callable[[], float] = time.monotonic,
        only_changes: bool = False,
        final: bool = False,
    ) -> None:
        self._read, self._emit, self._render = read, emit, render
        self.every_pct, self.interval, self.live = every_pct, interval, live
        self.only_changes, self.final = only_changes, final
        self._start: Snapshot | None = None
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="progress")
        self._first: tuple[float, int] | None = None
        self._reported = -1.0

    def eta(self, now: Snapshot) -> float | None:
        at = self._clock()
        if self._first is None:
            self._first = (at, now.finished)
            return None
        started, done_then = self._first
        rate = (now.finished - done_then) / max(at - started, 1e-9)
        left = now.calls - now.finished
        return left / rate if rate > 0 else None

    def tick(self) -> None:
        now = self._read()
        if self.only_changes and now == self._start:
            return
        eta = self.eta(now)
        step = now.percent // self.every_pct
        if self.live or step > self._reported:
            self._reported = step
            self._emit(self._render(now, eta))

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # progress must never break the export
                continue

    def __enter__(self) -> ProgressWatch:
        if self.only_changes:
            try:
                self._start = self._read()
            except Exception:  # then every read counts as a change
                self._start = None
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        if self.final:
            with suppress(Exception):  # progress must never break the export
                self.tick()
