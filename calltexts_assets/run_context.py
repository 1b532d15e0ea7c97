"""Per-call bookkeeping shared by the assets: attempts, ledger updates, errors, run log."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.concurrency import Tally, run_ahead
from calltexts_assets.ledger import CallRecord, Ledger
from calltexts_assets.masking import mask_url
from calltexts_assets.resources.bitrix24 import Bitrix24AuthError
from calltexts_assets.runlog import RunLog, open_for_dagster_run


@dataclass(frozen=True)
class StepOutcome:
    """What one call's step did. `label` is counted in the asset's metadata.

    A call's `attempts` in the ledger count its failed steps only (the registry's
    retry_count): a call exported at the first try has 0."""

    label: str
    updates: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0


# Failures that concern the whole run, not one call: stop at once, record nothing against
# the calls, so a re-run after the fix resumes exactly where this one stopped.
FATAL_ERRORS: tuple[type[BaseException], ...] = (Bitrix24AuthError,)


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
        context: dg.AssetExecutionContext,
        ledger: Ledger,
        *,
        stage: str,
        failure_status: str | None,
        log_dir: str | Path,
        summed: tuple[str, ...] = (),
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.stage = stage
        self.failure_status = failure_status
        self.log_dir = Path(log_dir)
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
        except FATAL_ERRORS as exc:
            with self._lock:
                self._fatal = self._fatal or exc
            self._log(record, "aborted", started, error_code(exc))
            return "aborted"
        except Exception as exc:
            code = error_code(exc)
            self.context.log.warning(f"{self.stage} failed for call {record.call_id}: {code}")
            status = {"status": self.failure_status} if self.failure_status else {}
            self.ledger.update(
                record.key,
                **status,
                error_code=code,
                error_message=clean_message(exc),
                attempts=record.attempts + 1,
                dagster_run_id=self.context.run.run_id,
            )
            self._log(record, "failed", started, code)
            return "failed"
        # A call left as it was (already stored) is counted in stage_end only: a no-op
        # re-run of 60 days would otherwise log thousands of lines that say nothing.
        if outcome.updates:
            self.ledger.update(
                record.key, **outcome.updates, dagster_run_id=self.context.run.run_id
            )
            self._log(record, outcome.label, started, outcome.updates.get("error_code"))
        with self._lock:
            self.bytes += outcome.bytes
            for name in self.sums:
                self.sums[name] += outcome.updates.get(name) or 0.0
        return outcome.label

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
        with open_for_dagster_run(self.log_dir, self.context) as self.run_log:
            self.run_log.event("stage_start", stage=self.stage)
            yield from run_ahead(
                records,
                lambda r: self._one(r, work),
                max_workers=max_workers,
                tally=self.tally,
                name=lambda r: r.call_id,
            )
            self.run_log.event("stage_end", stage=self.stage, **dict(self.tally.outcomes))
        if self._fatal is not None:
            raise dg.Failure(
                description=f"{self.stage} stopped: {clean_message(self._fatal)}. Calls not "
                "yet processed keep their state; re-run the same partitions after the fix.",
                metadata={"calls_done_before_stop": sum(self.tally.outcomes.values())},
            ) from self._fatal
        if self.tally.crashes:
            name, exc = self.tally.crashes[0]
            raise RuntimeError(
                f"{self.stage}: {len(self.tally.crashes)} calls crashed, first {name}"
            ) from exc
