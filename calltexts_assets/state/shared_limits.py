"""Limits shared by every run of the instance, kept in the ledger's database.

A multi-run backfill (CALLTEXTS_BACKFILL_RUN_DAYS) runs several processes at once, perhaps
on several machines, but the limits they must respect are not per run: the STT account's
requests in flight are per account, the portal's 2 requests/s per application. Each run
therefore takes its share from rows that all runs see (SQLite file or PostgreSQL: the same
statements work on both).

- `SharedSlots`: at most `limit` holders at once. A slot row is taken with one UPDATE whose
  WHERE says "free, or its holder's heartbeat is stale", so two runs never take the same
  slot; a heartbeat thread renews the slots a process holds. A process killed with -9 stops
  renewing, and its slots are free again after `lease_sec`; on the same host a dead pid
  frees them at once.
- `SharedRateLimiter`: the in-process `RateLimiter` whose booking of the next request time
  lives in one row, advanced atomically (UPDATE ... RETURNING), so all runs together keep
  to the rate. Low-rate mode (after repeated limit answers) stays each process's own: a
  process in it books longer intervals, which spaces everyone's requests.

Times are Unix seconds from each process's clock: the hosts of a cluster are expected to
keep NTP time; a skew of a second is small beside the lease.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from calltexts_assets.limits.processes import pid_alive, process_start
from calltexts_assets.limits.ratelimit import RateLimiter
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state.ledger import create_tables

log = scrubbed_logger(__name__)

STT_SLOTS = "stt"
# A holder renews every third of the lease; a killed holder's slot is free this long after
# its last renewal (at once on the same host, where its pid is seen to be gone).
DEFAULT_LEASE_SEC = 45.0
# Waiting for a slot: polls start fast and back off to this (slots free in seconds).
MAX_POLL_SEC = 0.5

_metadata = sa.MetaData()

limit_slots = sa.Table(
    "limit_slots",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # which limit ("stt")
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(64)),  # one acquisition's token; NULL when free
    sa.Column("owner", sa.String(128)),  # who holds it: the Dagster run id
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("process_start", sa.String(32)),  # with the pid, names one process (Linux)
    sa.Column("heartbeat_at", sa.Float),  # Unix time of the last renewal
)

request_pacing = sa.Table(
    "request_pacing",
    _metadata,
    sa.Column("name", sa.String(255), primary_key=True),  # e.g. bitrix24:<portal>:<app>
    sa.Column("next_at", sa.Float, nullable=False),  # Unix time the next request may go
)


def create_shared_tables(engine: sa.Engine) -> None:
    create_tables(_metadata, engine)


@dataclass(frozen=True)
class Holder:
    """One held slot, as an operator sees it (`SharedSlots.holders`)."""

    slot: int
    owner: str
    host: str
    pid: int
    heartbeat_age_sec: float


class SharedSlots:
    """At most `limit` slots of `name` held at once by all processes on the database.

    `with slots.slot(): ...` waits for a slot and gives it back afterwards. Thread-safe; one
    heartbeat thread per instance renews what this process holds. `close()` gives back what
    is still held and stops the heartbeat.
    """

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        limit: int,
        *,
        owner: str,
        lease_sec: float = DEFAULT_LEASE_SEC,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1:
            raise ValueError("a shared limit needs at least one slot")
        self.engine = engine
        self.name = name
        self.limit = limit
        self.owner = owner[:128]
        self.lease_sec = lease_sec
        self._clock = clock
        self._host = socket.gethostname()[:255]
        self._pid = os.getpid()
        self._process_start = process_start(self._pid)
        self._held: dict[str, int] = {}  # token -> slot
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.waited_sec = 0.0  # total time callers of this instance waited for a slot
        create_shared_tables(engine)
        self._ensure_rows()

    def _ensure_rows(self) -> None:
        """Slot rows 0..limit-1 exist (a limit raised later adds rows; rows past a lowered
        limit are simply never taken)."""
        c = limit_slots.c
        with self.engine.connect() as conn:
            present = set(conn.scalars(sa.select(c.slot).where(c.name == self.name)))
        for slot in range(self.limit):
            if slot in present:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(limit_slots).values(name=self.name, slot=slot))
            except sa.exc.IntegrityError:  # another process added it first
                pass

    def _free(self, now: float) -> sa.ColumnElement[bool]:
        c = limit_slots.c
        return sa.or_(c.holder.is_(None), c.heartbeat_at < now - self.lease_sec)

    def try_acquire(self) -> str | None:
        """A slot's token, or None when all `limit` slots are held by live holders."""
        c = limit_slots.c
        now = self._clock()
        mine = (c.name == self.name, c.slot < self.limit)
        with self.engine.connect() as conn:
            candidates = list(
                conn.scalars(
                    sa.select(c.slot).where(*mine, self._free(now)).order_by(c.slot).limit(8)
                )
            )
        token = uuid.uuid4().hex
        for slot in candidates:
            # The WHERE is checked again on the row itself: of two runs that saw the same
            # free slot, one UPDATE changes it and the other changes nothing.
            stmt = (
                sa.update(limit_slots)
                .where(c.name == self.name, c.slot == slot, self._free(now))
                .values(
                    holder=token,
                    owner=self.owner,
                    host=self._host,
                    pid=self._pid,
                    process_start=self._process_start,
                    heartbeat_at=now,
                )
            )
            with self.engine.begin() as conn:
                if conn.execute(stmt).rowcount == 1:
                    with self._lock:
                        self._held[token] = slot
                        self._start_heartbeat()
                    return token
        return None

    def acquire(self, timeout: float | None = None) -> str:
        """Wait for a slot; its token (give it to `release`). TimeoutError after `timeout`."""
        started = time.monotonic()
        poll = 0.02
        while True:
            token = self.try_acquire()
            if token is not None:
                self.waited_sec += time.monotonic() - started
                return token
            if self.release_dead_holders():
                continue
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(f"no {self.name} slot free within {timeout:g} s")
            time.sleep(poll)
            poll = min(poll * 2, MAX_POLL_SEC)

    def release(self, token: str) -> None:
        with self._lock:
            slot = self._held.pop(token, None)
        if slot is None:
            return
        c = limit_slots.c
        stmt = (
            sa.update(limit_slots)
            .where(c.name == self.name, c.slot == slot, c.holder == token)
            .values(holder=None, owner=None, host=None, pid=None, process_start=None)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    @contextmanager
    def slot(self) -> Iterator[None]:
        token = self.acquire()
        try:
            yield
        finally:
            self.release(token)

    def release_dead_holders(self) -> int:
        """Free the slots held by processes of this host that are gone (kill -9, OOM): no
        need to wait for their lease to run out."""
        c = limit_slots.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.slot, c.holder, c.pid, c.process_start).where(
                    c.name == self.name, c.holder.is_not(None), c.host == self._host
                )
            ).all()
        freed = 0
        for slot, holder, pid, started in rows:
            if pid is None or pid == self._pid or pid_alive(pid, started or ""):
                continue
            stmt = (
                sa.update(limit_slots)
                .where(c.name == self.name, c.slot == slot, c.holder == holder)
                .values(holder=None, owner=None, host=None, pid=None, process_start=None)
            )
            with self.engine.begin() as conn:
                freed += conn.execute(stmt).rowcount
        if freed:
            log.warning("%s: %d slots of dead processes on this host freed", self.name, freed)
        return freed

    def holders(self) -> list[Holder]:
        """Slots held now, stale ones included (their age says so)."""
        c = limit_slots.c
        now = self._clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.slot, c.owner, c.host, c.pid, c.heartbeat_at)
                .where(c.name == self.name, c.holder.is_not(None))
                .order_by(c.slot)
            ).all()
        return [
            Holder(slot, owner or "", host or "", pid or 0, now - (beat or 0.0))
            for slot, owner, host, pid, beat in rows
        ]

    def renew(self) -> None:
        """Renew the heartbeat of every slot this process holds."""
        with self._lock:
            tokens = list(self._held)
        if not tokens:
            return
        c = limit_slots.c
        stmt = (
            sa.update(limit_slots)
            .where(c.name == self.name, c.holder.in_(tokens))
            .values(heartbeat_at=self._clock())
        )
        with self.engine.begin() as conn:
            renewed = conn.execute(stmt).rowcount
        if renewed < len(tokens):  # the lease ran out (a stalled process) and was taken
            log.warning("%s: %d held slots were taken over", self.name, len(tokens) - renewed)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"{self.name}-slots-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_sec / 3):
            try:
                self.renew()
            except sa.exc.DBAPIError as exc:  # the next beat tries again within the lease
                log.warning("%s: slot heartbeat failed: %s", self.name, type(exc).__name__)

    def close(self) -> None:
        with self._lock:
            tokens = list(self._held)
        for token in tokens:
            self.release(token)
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None


def stt_slots(engine: sa.Engine, limit: int, *, owner: str) -> SharedSlots | None:
    """The STT slots of one step (`owner`: its run id; close them when it ends), or None
    when there is no shared limit (`limit` 0)."""
    return SharedSlots(engine, STT_SLOTS, limit, owner=owner) if limit > 0 else None


class SharedRateLimiter(RateLimiter):
    """`RateLimiter` whose next free request time is one row shared by every process."""

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        rate: float,
        *,
        wall_clock: Callable[[], float] = time.time,
        **kwargs: object,
    ) -> None:
        super().__init__(rate, **kwargs)  # type: ignore[arg-type]
        self.engine = engine
        self.name = name[:255]
        self._wall = wall_clock
        create_shared_tables(engine)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(request_pacing).values(name=self.name, next_at=0.0))
        except sa.exc.IntegrityError:  # the row is there (another run, an earlier one)
            pass

    def acquire(self) -> float:
        rate = self.effective_rate
        if rate <= 0:
            return 0.0
        interval = 1.0 / rate
        now = self._wall()
        c = request_pacing.c
        # Book [max(next_at, now), + interval) in one statement: concurrent bookings are
        # serialised by the row lock (PostgreSQL) or the write lock (SQLite).
        start = sa.case((c.next_at > now, c.next_at), else_=sa.literal(now))
        stmt = (
            sa.update(request_pacing)
            .where(c.name == self.name)
            .values(next_at=start + interval)
            .returning(c.next_at)
        )
        with self.engine.begin() as conn:
            booked_end = conn.execute(stmt).scalar_one()
        wait = max(0.0, booked_end - interval - now)
        if wait > 0:
            self._sleep(wait)
        return wait
