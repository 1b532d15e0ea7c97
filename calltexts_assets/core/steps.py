"""Per-call bookkeeping shared by the stages: attempts, ledger updates, errors, run log."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from calltexts_assets.core.concurrency import Tally, run_ahead
from calltexts_assets.core.errors import RunWideError
from calltexts_assets.core.ledger import CallRecord, Ledger
from calltexts_assets.core.masking import mask_url
from calltexts_assets.core.runlog import RunLog, logging_into


@dataclass(frozen=True)
class StepOutcome:
    """What one call's step did. `label` is counted in the asset's metadata.

    A call's `attempts` in the ledger count its failed steps only (the registry's
    retry_count): a call exported at the first try has 0."""

    label: str
    updates: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0


class RunStopped(Exception):
    """A stage stopped for a `RunWideError`; the calls not yet processed keep their state."""

    def __init__(self, stage: str, cause: BaseException, calls_done: int) -> None:
        super().__init__(
            f"{stage} stopped: {clean_message(cause)}. Calls not yet processed keep their "
            "state; re-run the same partitions after the fix."
        )
        self.stage, self.cause, self.calls_done = stage, cause, calls_done


def error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def clean_message(exc: BaseException) -> str:
    return mask_url(str(exc))[:2000]


class CallSteps:
    """Runs one stage over many calls with bounded concurrency and records each outcome."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        stage: str,
        failure_status: str | None,
        run_id: str,
        open_run_log: Callable[[], RunLog],
        warn: Callable[[str], None],
        summed: tuple[str, ...] = (),
    ) -> None:
        self.ledger = ledger
        self.stage = stage
        self.failure_status = failure_status
        self.run_id = run_id  # the Dagster run, recorded on every row it touches
        self._open_run_log = open_run_log
        self._warn = warn
        self.run_log: RunLog | None = None
        self.bytes = 0
        self.tally = Tally()
        # Totals of these numeric updates over the calls done now (e.g. minutes, cost).
        self.sums = dict.fromkeys(summed, 0.0)
        self._fatal: BaseException | None = None
        self._lock = threading.Lock()

    def _log(self, record: CallRecord, outcome: str, started: float, code: str | None) -> None:
        if self.run_log is not None:
            self.run_log.event(
                "call_step",
                call_id=record.call_id,
                stage=self.stage,
                outcome=outcome,
                duration_ms=round((time.monotonic() - started) * 1000),
                error_code=code,
            )

    def _one(self, record: CallRecord, work: Callable[[CallRecord], StepOutcome]) -> str:
        if self._fatal is not None:
            return "not_started"
        started = time.monotonic()
        try:
            outcome = work(record)
        except RunWideError as exc:
            with self._lock:
                self._fatal = self._fatal or exc
            self._log(record, "aborted", started, error_code(exc))
            return "aborted"
        except Exception as exc:
            code = error_code(exc)
            self._warn(f"{self.stage} failed for call {record.call_id}: {code}")
            status = {"status": self.failure_status} if self.failure_status else {}
            self.ledger.update(
                record.key,
                **status,
                error_code=code,
                error_message=clean_message(exc),
                attempts=record.attempts + 1,
                dagster_run_id=self.run_id,
            )
            self._log(record, "failed", started, code)
            return "failed"
        # A call left as it was (already stored) is counted in stage_end only: a no-op
        # re-run of 60 days would otherwise log thousands of lines that say nothing.
        if outcome.updates:
            self.ledger.update(record.key, **outcome.updates, dagster_run_id=self.run_id)
            self._log(record, outcome.label, started, outcome.updates.get("error_code"))
        with self._lock:
            self.bytes += outcome.bytes
            for name in self.sums:
                self.sums[name] += outcome.updates.get(name) or 0.0
        return outcome.label

    def _until_stopped(self, records: Iterable[CallRecord]) -> Iterator[CallRecord]:
        """`records`, ended by a run-wide error raised while producing them (e.g. a missing
        scope when the next calls' links are resolved): the stage then stops as it does
        when a call's own step raises one."""
        try:
            yield from records
        except RunWideError as exc:
            with self._lock:
                self._fatal = self._fatal or exc

    def run(
        self,
        records: Iterable[CallRecord],
        work: Callable[[CallRecord], StepOutcome],
        *,
        max_workers: int,
    ) -> Tally:
        """`records` may be a generator over the ledger: it is consumed as workers free up."""
        for _ in self.stream(records, work, max_workers=max_workers):
            pass
        return self.tally

    def stream(
        self,
        records: Iterable[CallRecord],
        work: Callable[[CallRecord], StepOutcome],
        *,
        max_workers: int,
    ) -> Iterator[tuple[CallRecord, str]]:
        """`run`, yielding each call with its outcome label as soon as it is done, so that the
        next stage can take it while this one goes on. Raises at the end, as `run` does, when
        the stage was stopped or a call crashed."""
        self.tally = Tally()
        with self._open_run_log() as self.run_log, logging_into(self.run_log):
            self.run_log.event("stage_start", stage=self.stage)
            yield from run_ahead(
                self._until_stopped(records),
                lambda r: self._one(r, work),
                max_workers=max_workers,
                tally=self.tally,
                name=lambda r: r.call_id,
            )
            self.run_log.event("stage_end", stage=self.stage, **dict(self.tally.outcomes))
        if self._fatal is not None:
            raise RunStopped(
                self.stage, self._fatal, sum(self.tally.outcomes.values())
            ) from self._fatal
        if self.tally.crashes:
            name, exc = self.tally.crashes[0]
            raise RuntimeError(
                f"{self.stage}: {len(self.tally.crashes)} calls crashed, first {name}"
            ) from exc
