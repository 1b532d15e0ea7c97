"""Progress read from the ledger, reported every few percent with an ETA."""

from __future__ import annotations

from calltexts_assets.state.progress import ProgressWatch, Snapshot, bar, describe


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _at(finished: int, calls: int = 200) -> Snapshot:
    return Snapshot(calls, finished, finished, 1, finished * 1.5, finished * 0.012)


def test_a_line_every_five_percent_with_the_pace_seen_so_far() -> None:
    clock, lines = Clock(), []
    reads = iter([_at(0), _at(4), _at(10), _at(11), _at(20), _at(200)])
    watch = ProgressWatch(lambda: next(reads), lines.append, every_pct=5, clock=clock)
    for _ in range(6):
        watch.tick()
        clock.now += 10.0
    # 0 %, then 5 % (at 10), then 10 % (at 20), then 100 %: 2 % and 5.5 % are not new steps
    assert [line.split(" calls")[0] for line in lines] == ["0/200", "10/200", "20/200", "200/200"]
    assert lines[0].endswith("ETA —")
    assert lines[1].endswith("ETA 0:06:20")  # 10 calls in 20 s: 190 left take 380 s
    assert "30.0 audio min | $0.2400 | 1 failed" in lines[2]


def test_the_terminal_bar_is_redrawn_on_every_read() -> None:
    lines: list[str] = []
    reads = iter([_at(50), _at(50)])
    watch = ProgressWatch(lambda: next(reads), lines.append, live=True, render=bar)
    watch.tick()
    watch.tick()
    assert len(lines) == 2 and lines[0].startswith("[######..................] 50/200 calls")


def test_an_empty_period_has_no_percent_to_divide_by() -> None:
    assert describe(Snapshot(0, 0, 0, 0, 0.0, 0.0), None).startswith("0/0 calls (0 %)")


def test_only_changes_shows_nothing_until_the_figures_move_and_final_reads_once_more() -> None:
    """A re-run with nothing to do shows no figures; the end of a short step is still logged."""
    lines: list[str] = []
    reads = iter([_at(200), _at(200), _at(200)])  # at the start, one tick, at the end
    with ProgressWatch(
        lambda: next(reads), lines.append, interval=3600, only_changes=True, final=True
    ) as watch:
        watch.tick()
    assert lines == []

    reads = iter([_at(100), _at(100), _at(150)])
    with ProgressWatch(
        lambda: next(reads), lines.append, interval=3600, only_changes=True, final=True
    ) as watch:
        watch.tick()
    assert [line.split(" calls")[0] for line in lines] == ["150/200"]
