"""Limits shared by runs, on SQLite and PostgreSQL: real processes, real kill -9.

Every test runs on both databases. Without a reachable PostgreSQL the Postgres half skips
on a developer's machine and FAILS when CI=true.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from calltexts_assets.state.ledger import database_engine
from calltexts_assets.state.shared_limits import SharedRateLimiter, SharedSlots, limit_slots
from calltexts_tests.support.databases import postgres_schema

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    try:
        with postgres_schema("limits") as url:
            yield url
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL unreachable: {str(exc.orig).strip().splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# One process: `threads` threads each take a slot `rounds` times, hold it 30 ms, and print
# the (taken, given back) times measured inside the holding.
HOLDERS = """
    import json, sys, threading, time
    from calltexts_assets.state.ledger import database_engine
    from calltexts_assets.state.shared_limits import SharedSlots

    url, limit, threads, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    slots = SharedSlots(database_engine(url), "stt", limit, owner=f"run-{sys.argv[5]}")
    spans = []

    def work():
        for _ in range(rounds):
            with slots.slot():
                taken = time.time()
                time.sleep(0.03)
                spans.append((taken, time.time()))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    slots.close()
    print(json.dumps(spans))
"""


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    at_once = most = 0
    for _, step in events:  # at a tie, -1 sorts first: a release precedes a take
        at_once += step
        most = max(most, at_once)
    return most


def test_processes_together_never_hold_more_than_the_limit(db_url: str) -> None:
    limit, processes, threads, rounds = 3, 4, 3, 4
    engine = database_engine(db_url)
    SharedSlots(engine, "stt", limit, owner="setup").close()  # tables and rows made once
    children = [
        _python(HOLDERS, db_url, str(limit), str(threads), str(rounds), str(n))
        for n in range(processes)
    ]
    spans: list[tuple[float, float]] = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        spans += [tuple(span) for span in json.loads(out)]
    assert len(spans) == processes * threads * rounds
    # 12 threads want a slot at once: never more than the limit hold one. (Each span is
    # measured inside its holding, so a busy machine can only make the overlap look smaller.)
    assert 1 <= _most_at_once(spans) <= limit
    with engine.connect() as conn:
        held = conn.scalar(sa.select(sa.func.count()).where(limit_slots.c.holder.is_not(None)))
    engine.dispose()
    assert held == 0  # everyone gave back what they took


def test_the_limit_is_reached_and_not_passed_by_holders_of_different_runs(db_url: str) -> None:
    engine = database_engine(db_url)
    runs = [SharedSlots(engine, "stt", 3, owner=f"run-{n}") for n in range(4)]
    tokens = [run.try_acquire() for run in runs]
    assert [token is not None for token in tokens] == [True, True, True, False]
    runs[0].release(tokens[0])
    assert runs[3].try_acquire() is not None  # a slot given back is taken at once
    for run in runs:
        run.close()
    engine.dispose()


HOLD_FOREVER = """
    import sys, time
    from calltexts_assets.state.ledger import database_engine
    from calltexts_assets.state.shared_limits import SharedSlots

    slots = SharedSlots(database_engine(sys.argv[1]), "stt", int(sys.argv[2]), owner="doomed")
    tokens = [slots.acquire() for _ in range(int(sys.argv[2]))]
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holders_slots_come_back_at_once_on_its_host(db_url: str) -> None:
    engine = database_engine(db_url)
    child = _python(HOLD_FOREVER, db_url, "2")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        slots = SharedSlots(engine, "stt", 2, owner="survivor")
        assert slots.try_acquire() is None  # both held by a live process
        assert [h.owner for h in slots.holders()] == ["doomed", "doomed"]
        os.kill(child.pid, signal.SIGKILL)
        # Not reaped yet (a zombie): its pid still exists, the process does not.
        # Within 10 s each (TimeoutError otherwise), not after the 45 s lease: the dead pid
        # was seen.
        tokens = [slots.acquire(timeout=10), slots.acquire(timeout=10)]
        assert {h.owner for h in slots.holders()} == {"survivor"}
        for token in tokens:
            slots.release(token)
        assert slots.holders() == []
        slots.close()
    finally:
        child.kill()
        child.wait()
        engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_holder_on_another_host_loses_its_slot_only_when_its_heartbeat_stops(
    db_url: str,
) -> None:
    engine = database_engine(db_url)
    clock = Clock()
    there = SharedSlots(engine, "stt", 1, owner="elsewhere", lease_sec=30, clock=clock)
    here = SharedSlots(engine, "stt", 1, owner="here", lease_sec=30, clock=clock)
    token = there.try_acquire()
    assert token is not None
    with engine.begin() as conn:  # as a pod on another node would have written it
        conn.execute(sa.update(limit_slots).values(host="other-node", pid=1))
    clock.now += 20
    assert here.try_acquire() is None
    there.renew()  # its heartbeat: the lease starts again
    clock.now += 20
    assert here.release_dead_holders() == 0  # another host's pid says nothing here
    assert here.try_acquire() is None
    clock.now += 11  # 31 s without a heartbeat: the holder is taken for dead
    taken = here.try_acquire()
    assert taken is not None
    assert [h.owner for h in here.holders()] == ["here"]
    there.release(token)  # the late release of the old holder frees nothing of the new one
    assert [h.owner for h in here.holders()] == ["here"]
    here.close()
    there._stop.set()
    engine.dispose()


def test_a_lower_limit_leaves_the_extra_rows_unused(db_url: str) -> None:
    engine = database_engine(db_url)
    wide = SharedSlots(engine, "stt", 3, owner="a")
    narrow = SharedSlots(engine, "stt", 1, owner="b")
    assert narrow.try_acquire() is not None
    assert narrow.try_acquire() is None
    assert wide.try_acquire() is not None  # rows 1 and 2 exist for a limit of 3
    wide.close()
    narrow.close()
    engine.dispose()


PACED = """
    import json, sys, threading
    from calltexts_assets.state.ledger import database_engine
    from calltexts_assets.state.shared_limits import SharedRateLimiter

    # The limiter's own numbers, not a timestamp taken after it returns: each request's
    # booked start is the time the booking read plus the wait it was given.
    seen = threading.local()
    def clock():
        import time
        seen.now = time.time()
        return seen.now
    limiter = SharedRateLimiter(
        database_engine(sys.argv[1]), "bitrix24:portal", float(sys.argv[2]), wall_clock=clock
    )
    booked = []
    def work():
        for _ in range(5):
            wait = limiter.acquire()
            booked.append(seen.now + wait)
    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(booked))
"""


def test_processes_together_keep_to_one_request_rate(db_url: str) -> None:
    rate, processes = 20.0, 4  # 4 processes x 2 threads x 5 requests = 40 requests
    SharedRateLimiter(database_engine(db_url), "bitrix24:portal", rate).engine.dispose()
    children = [_python(PACED, db_url, str(rate)) for _ in range(processes)]
    booked: list[float] = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        booked += json.loads(out)
    booked.sort()
    assert len(booked) == 40
    # The shared row hands out one start per interval, whichever process asks: no two
    # requests of the 40 are booked closer than 1/rate, however busy the machine.
    gaps = [later - earlier for earlier, later in itertools.pairwise(booked)]
    assert min(gaps) >= 1 / rate - 1e-6
    # Times near 1.8e9 s carry ~2e-7 s of float error each: the tolerance adds up per gap.
    assert booked[-1] - booked[0] >= 39 * (1 / rate - 1e-6)


def test_low_rate_mode_stays_the_processes_own_and_slows_its_bookings(db_url: str) -> None:
    sleeps: list[float] = []
    clock = Clock()
    limiter = SharedRateLimiter(
        database_engine(db_url), "bitrix24:portal", 2.0, wall_clock=clock, sleep=sleeps.append,
        low_rate_after=1,
    )  # fmt: skip
    waits = [limiter.acquire() for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.5, 1.0])  # booked 0.5 s apart in the shared row
    assert limiter.note_limit_hit() is True
    assert limiter.acquire() == pytest.approx(1.5)  # the row's next free time
    assert limiter.acquire() == pytest.approx(3.5)  # then 2 s apart: rate / 4
    limiter.engine.dispose()
