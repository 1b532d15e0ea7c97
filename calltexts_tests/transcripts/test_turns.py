"""Planning the requests of the turns mode: each side's speech, in order, nothing twice."""

from __future__ import annotations

import pytest

from calltexts_assets.transcripts.turns import TurnGroup, plan_requests, prompt_before


def test_turns_alternate_and_a_side_keeps_talking_across_its_own_pauses() -> None:
    operator = [(0.5, 2.0), (2.8, 4.0), (9.0, 10.0)]  # a breath at 2.0-2.8: same request
    client = [(4.6, 8.1)]
    groups = plan_requests([operator, client], max_request_sec=240)
    assert groups == [
        TurnGroup(0, 0.5, 4.0),
        TurnGroup(1, 4.6, 8.1),
        TurnGroup(0, 9.0, 10.0),
    ]


def test_an_interjection_splits_the_speakers_request_so_that_order_holds() -> None:
    operator = [(0.0, 3.0), (3.6, 6.0)]
    client = [(3.1, 3.5)]  # "да" in the operator's pause
    groups = plan_requests([operator, client], max_request_sec=240)
    assert [(g.side, g.start) for g in groups] == [(0, 0.0), (1, 3.1), (0, 3.6)]


def test_nothing_is_sent_twice_and_blips_are_not_sent() -> None:
    operator = [(0.0, 1.0), (5.0, 5.1)]  # 0.1 s: a click, under MIN_TURN_SEC
    client = [(1.5, 3.0)]
    groups = plan_requests([operator, client], max_request_sec=240)
    sent = sum(g.duration for g in groups)
    assert sent == pytest.approx(2.5)
    assert all(g.duration >= 0.2 for g in groups)


def test_a_monologue_longer_than_a_request_is_cut_into_equal_parts() -> None:
    groups = plan_requests([[(0.0, 500.0)], []], max_request_sec=240)
    assert len(groups) == 3 and all(g.side == 0 for g in groups)
    assert groups[0].start == 0.0 and groups[-1].end == 500.0
    assert all(g.duration <= 240 for g in groups)


def test_joined_turns_stay_under_the_request_cap() -> None:
    operator = [(i * 10.0, i * 10.0 + 8.0) for i in range(60)]
    groups = plan_requests([operator, []], max_request_sec=100)
    assert all(g.duration <= 100 for g in groups)
    assert groups[0].end == 98.0 and groups[1].start == 100.0


def test_the_prompt_is_the_end_of_the_dialogue_in_whole_words() -> None:
    assert prompt_before(["Добрый день", "", "Здравствуйте"]) == "Добрый день Здравствуйте"
    long = prompt_before(["слово"] * 200)
    assert len(long) <= 400 and long.startswith("слово") and long.endswith("слово")


def test_a_side_speaking_on_after_the_others_interjection_is_a_new_request() -> None:
    operator = [(10.5, 14.0)]
    client = [(12.0, 12.5), (16.5, 19.0)]  # "Да" over the operator, then the client's turn
    groups = plan_requests([operator, client], max_request_sec=240)
    assert [(g.side, g.start) for g in groups] == [(0, 10.5), (1, 12.0), (1, 16.5)]
