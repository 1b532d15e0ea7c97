"""Per-call bookkeeping shared by the stages: attempts, ledger updates, errors, run log."""

from __future__ import annotations

import errno
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from calltexts_assets.limits.concurrency import Tally, run_ahead
from calltexts_assets.limits.run_errors import RunWideError
from calltexts_assets.runlog.log import RunLog, logging_into
from calltexts_assets.runlog.masking import mask_url
from calltexts_assets.state.ledger import CallRecord, Ledger

Key = tuple[str, str, str]


@dataclass(frozen=True)
class StepOutcome:
    """What one call's step did. `label` is counted in the asset's metadata.

    A call's `attempts` in the ledger count its failed steps only (the registry's
    retry_count): a call exported at the first try has 0."""

    label: str
    updates: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    # Whether its updates count in the stage's sums of work done now: not for what an
    # earlier run did and paid for (adopted from storage).
    summed: bool = True


class RunStopped(Exception):
    """A stage stopped for a `RunWideError`; the calls not yet processed keep their state."""

    def __init__(self, stage: str, cause: BaseException, calls_done: int) -> None:
        super().__init__(
            f"{stage} stopped: {clean_message(cause)}. Calls not yet processed keep their "
            "state; re-run the same partitions after the fix."
        )
        self.stage, self.cause, self.calls_done = stage, cause, calls_done


# OS errors worth a name an operator acts on (the errno alone would say `2` or `28`).
_OS_ERRORS = {
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_quota_exceeded",
    errno.EROFS: "read_only_filesystem",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.ENOENT: "file_not_found",
}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        return _OS_ERRORS[exc.errno]
    code = getattr(exc, "code", None)
    if code and isinstance(code, str):
        return code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def clean_message(exc: BaseException) -> str:
    return mask_url(str(exc))[:2000]


# A claim outlives a stalled request by this much; a live run renews it every third of it,
# and a run whose process died loses its claims when the next run reaps it (or when this
# runs out).
LEASE_SEC = 600.0
# How often calls claimed by another run are looked at again, and for how long at most.
ELSEWHERE_POLL_SEC = 2.0
ELSEWHERE_WAIT_SEC = 6 * 3600.0
DONE_ELSEWHERE = "done_elsewhere"
CLAIMED_ELSEWHERE = "claimed_elsewhere"


class CallSteps:
    """Runs one stage over many calls with bounded concurrency and records each outcome.

    Each call is claimed in the ledger before its step runs, so runs that overlap (the
    daily schedule, the weekly catch-up, the API) share the work instead of doing it twice:
    a call another run holds is left to it and looked at again at the end of the stage,
    when it is either done (`done_elsewhere`) or free again (its run failed)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        stage: str,
        failure_status: str | None,
        run_id: str,
        open_run_log: Callable[[], RunLog],
        warn: Callable[[str], None],
        needed: Callable[[CallRecord], bool] = lambda record: True,
        settled: Callable[[CallRecord], StepOutcome | None] = lambda record: None,
        summed: tuple[str, ...] = (),
        lease_sec: float = LEASE_SEC,
        elsewhere_poll_sec: float = ELSEWHERE_POLL_SEC,
        elsewhere_wait_sec: float = ELSEWHERE_WAIT_SEC,
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
        self._needed = needed  # judged on the row as it is once the call is claimed
        # A read-only look that finds a call's work already done (a stored recording intact):
        # such a call is neither claimed nor re-read, so a no-op re-run writes nothing per call.
        self._settled = settled
        self.lease_sec = lease_sec
        self.elsewhere_poll_sec = elsewhere_poll_sec
        self.elsewhere_wait_sec = elsewhere_wait_sec
        self._seen: set[Key] = set()  # calls this stage has taken up (a key comes once)
        self._held: set[Key] = set()  # claims held now, renewed by the heartbeat
        self._elsewhere: dict[Key, CallRecord] = {}
        # The same figures per day (export id), for each partition's own metadata.
        self.by_day: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.sums_by_day: defaultdict[str, Counter[str]] = defaultdict(Counter)

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

    def _until(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.lease_sec)

    def _claimed(self, record: CallRecord, work: Callable[[CallRecord], StepOutcome]) -> str:
        label = self._claimed_outcome(record, work)
        with self._lock:
            self.by_day[record.run_id][label] += 1
        return label

    def _claimed_outcome(
        self, record: CallRecord, work: Callable[[CallRecord], StepOutcome]
    ) -> str:
        key = record.key
        with self._lock:
            if key in self._seen:  # a source may list a call twice (a stream, then a sweep)
                return "repeated"
            self._seen.add(key)
        done = self._settled(record)
        if done is not None:
            return done.label
        if not self.ledger.claim(key, self.run_id, self._until()):
            with self._lock:
                self._seen.discard(key)
                self._elsewhere[key] = record
            return CLAIMED_ELSEWHERE
        with self._lock:
            self._held.add(key)
        released = False
        try:
            fresh = self.ledger.record(key)  # another run may have done it since it was read
            if fresh is None or not self._needed(fresh):
                return DONE_ELSEWHERE
            label, released = self._one(fresh, work)
            return label
        finally:
            with self._lock:
                self._held.discard(key)
            if not released:
                self.ledger.release(key, self.run_id)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.lease_sec / 3):
            with self._lock:
                held = list(self._held)
            self.ledger.renew(held, self.run_id, self._until())

    def _one(
        self, record: CallRecord, work: Callable[[CallRecord], StepOutcome]
    ) -> tuple[str, bool]:
        """The call's outcome label, and whether the ledger update that recorded it also
        released the call's claim (else the caller releases it)."""
        if self._fatal is not None:
            return "not_started", False
        started = time.monotonic()
        try:
            outcome = work(record)
        except RunWideError as exc:
            with self._lock:
                self._fatal = self._fatal or exc
            self._log(record, "aborted", started, error_code(exc))
            return "aborted", False
        except Exception as exc:
            code = error_code(exc)
            self._warn(f"{self.stage} failed for call {record.call_id}: {code}")
            status = {"status": self.failure_status} if self.failure_status else {}
            self.ledger.update(
                record.key,
                release_claim_of=self.run_id,
                **status,
                error_code=code,
                error_message=clean_message(exc),
                attempts=record.attempts + 1,
                dagster_run_id=self.run_id,
            )
            self._log(record, "failed", started, code)
            return "failed", True
        # A call left as it was (already stored) is counted in stage_end only: a no-op
        # re-run of 60 days would otherwise log thousands of lines that say nothing.
        if outcome.updates:
            # The outcome and the end of the claim in one commit (a crash before it leaves
            # the claim to expire or to be reaped, as before).
            self.ledger.update(
                record.key,
                release_claim_of=self.run_id,
                **outcome.updates,
                dagster_run_id=self.run_id,
            )
            self._log(record, outcome.label, started, outcome.updates.get("error_code"))
        with self._lock:
            self.bytes += outcome.bytes
            self.sums_by_day[record.run_id]["bytes"] += outcome.bytes
            for name in self.sums if outcome.summed else ():
                # float(): a numpy scalar here would make the metadata unstorable by Dagster.
                value = float(outcome.updates.get(name) or 0.0)
                self.sums[name] += value
                self.sums_by_day[record.run_id][name] += value
        return outcome.label, bool(outcome.updates)

    def _rounds(self, records: Iterable[CallRecord]) -> Iterator[Iterable[CallRecord]]:
        """The calls to take up, round by round: first `records`, then, each after the round
        before it has finished, the calls other runs held, once they are free again (done by
        them, or given up by a run that failed). Waits at most `elsewhere_wait_sec`."""
        yield records
        deadline = time.monotonic() + self.elsewhere_wait_sec
        while True:
            with self._lock:
                waiting, self._elsewhere = self._elsewhere, {}
            if not waiting:
                return
            if self._fatal is not None or time.monotonic() >= deadline:
                self._warn(
                    f"{self.stage}: {len(waiting)} calls still held by another run; "
                    "the next run takes them up"
                )
                return
            time.sleep(self.elsewhere_poll_sec)
            yield list(waiting.values())

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
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        heartbeat.start()
        try:
            with self._open_run_log() as self.run_log, logging_into(self.run_log):
                self.run_log.event("stage_start", stage=self.stage)
                for source in self._rounds(self._until_stopped(records)):
                    yield from run_ahead(
                        source,
                        lambda r: self._claimed(r, work),
                        max_workers=max_workers,
                        tally=self.tally,
                        name=lambda r: r.call_id,
                    )
                self.run_log.event("stage_end", stage=self.stage, **dict(self.tally.outcomes))
        finally:
            stop.set()
        if self._fatal is not None:
            raise RunStopped(
                self.stage, self._fatal, sum(self.tally.outcomes.values())
            ) from self._fatal
        if self.tally.crashes:
            name, exc = self.tally.crashes[0]
            raise RuntimeError(
                f"{self.stage}: {len(self.tally.crashes)} calls crashed, first {name}"
            ) from exc
