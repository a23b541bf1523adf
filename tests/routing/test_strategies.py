"""The routing decision as a table: plain values in, an agent (or none) and a reason out."""

from __future__ import annotations

import datetime as dt

import pytest

from conversations.routing.strategies import (
    AI,
    HUMAN,
    LEAST_BUSY,
    MANUAL,
    ROUND_ROBIN,
    Candidate,
    Situation,
    choose,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def agent(id: int, *, presence: str = "online", load: int = 0, capacity: int = 3, minutes_ago: int | None = None,
          kind: str = HUMAN) -> Candidate:
    last = None if minutes_ago is None else T0 - dt.timedelta(minutes=minutes_ago)
    return Candidate(id=id, name=f"agent{id}", kind=kind, presence=presence, load=load, capacity=capacity,
                     last_assigned_at=last)


CASES = [
    # (situation, candidates, chosen id, words in the reason)
    (Situation(ROUND_ROBIN), [agent(1, minutes_ago=1), agent(2, minutes_ago=5)], 2, "least recently"),
    (Situation(ROUND_ROBIN), [agent(1, minutes_ago=1), agent(2)], 2, "not been assigned"),
    (Situation(ROUND_ROBIN), [agent(1, minutes_ago=9, load=3), agent(2, minutes_ago=1)], 2, "round robin"),
    (Situation(ROUND_ROBIN), [agent(1, presence="away"), agent(2, presence="offline")], None, "no agent is online"),
    (Situation(ROUND_ROBIN), [agent(1, load=3), agent(2, load=5, capacity=5)], None, "at capacity"),
    (Situation(ROUND_ROBIN), [], None, "no agents"),
    (Situation(LEAST_BUSY), [agent(1, load=2), agent(2, load=1, minutes_ago=0)], 2, "fewest open"),
    (Situation(LEAST_BUSY), [agent(1, load=1, minutes_ago=1), agent(2, load=1, minutes_ago=7)], 2, "fewest"),
    (Situation(LEAST_BUSY), [agent(1, load=0, presence="away"), agent(2, load=2)], 2, "least busy"),
    (Situation(MANUAL), [agent(1)], None, "claim conversations themselves"),
    (Situation(ROUND_ROBIN, ai_first=True), [agent(1), agent(9, kind=AI)], 9, "AI first"),
    (Situation(ROUND_ROBIN, ai_first=True), [agent(1), agent(9, kind=AI, load=3)], 1, "round robin"),
    (Situation(ROUND_ROBIN, ai_first=True, handed_off=True), [agent(1, load=3), agent(9, kind=AI)], None,
     "at capacity"),
    (Situation(LEAST_BUSY, handed_off=True), [agent(1, load=2), agent(9, kind=AI)], 1, "least busy"),
    (Situation(LEAST_BUSY), [agent(1, load=2), agent(9, kind=AI)], 9, "least busy"),
]


@pytest.mark.parametrize(("situation", "candidates", "chosen", "words"), CASES)
def test_the_decision_and_its_reason(situation, candidates, chosen, words):
    decision = choose(situation, candidates)
    assert decision.agent_id == chosen
    assert words in decision.reason


def test_the_reason_names_the_agent_and_their_load():
    decision = choose(Situation(LEAST_BUSY), [agent(4, load=1, capacity=5)])
    assert decision.reason == "least busy: agent4 had the fewest open conversations (1 of 5 open)"
