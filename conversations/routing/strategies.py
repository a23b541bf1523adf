"""Choosing an agent for a conversation: a pure decision over plain values, with its reason.

No database, no clock: the caller loads the candidates (presence, load, capacity, last
assignment) and stores the outcome. `choose` returns the agent's id or None, and a reason in
plain words that is stored on the conversation and shown to agents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

ROUND_ROBIN = "round_robin"
LEAST_BUSY = "least_busy"
MANUAL = "manual"

ONLINE = "online"
HUMAN = "human"
AI = "ai"

# Sorts "never assigned" before any real time, so a newcomer is served first.
_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Candidate:
    """An agent of the department as routing sees it. `load` counts open conversations only."""

    id: int
    name: str
    kind: str  # HUMAN or AI
    presence: str  # online, away, offline (AI agents: online while enabled)
    load: int
    capacity: int
    last_assigned_at: dt.datetime | None = None

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity


@dataclass(frozen=True)
class Situation:
    """What routing needs to know of the conversation and its department."""

    strategy: str
    ai_first: bool = False
    handed_off: bool = False  # an AI agent gave it up: humans only from now on


@dataclass(frozen=True)
class Decision:
    agent_id: int | None
    reason: str


def choose(situation: Situation, candidates: Sequence[Candidate]) -> Decision:
    """The agent who gets the conversation, or None (it waits in the queue), and why."""
    if situation.strategy == MANUAL:
        return Decision(None, "waiting in the queue: this department's agents claim conversations themselves")
    if situation.ai_first and not situation.handed_off:
        ai = _pick(situation.strategy, [c for c in candidates if c.kind == AI])
        if ai is not None:
            return Decision(ai.id, f"AI first: {ai.name} {_why(situation.strategy, ai)}")
    humans = [c for c in candidates if c.kind == HUMAN or not (situation.handed_off or situation.ai_first)]
    chosen = _pick(situation.strategy, humans)
    if chosen is not None:
        return Decision(chosen.id, f"{_label(situation.strategy)}: {chosen.name} {_why(situation.strategy, chosen)}")
    return Decision(None, _why_nobody(humans))


def _pick(strategy: str, candidates: Sequence[Candidate]) -> Candidate | None:
    able = [c for c in candidates if c.presence == ONLINE and c.has_room]
    if not able:
        return None
    if strategy == LEAST_BUSY:
        return min(able, key=lambda c: (c.load, c.last_assigned_at or _NEVER, c.id))
    return min(able, key=lambda c: (c.last_assigned_at or _NEVER, c.load, c.id))


def _label(strategy: str) -> str:
    return {ROUND_ROBIN: "round robin", LEAST_BUSY: "least busy"}.get(strategy, strategy)


def _why(strategy: str, chosen: Candidate) -> str:
    room = f"{chosen.load} of {chosen.capacity} open"
    if strategy == LEAST_BUSY:
        return f"had the fewest open conversations ({room})"
    if chosen.last_assigned_at is None:
        return f"had not been assigned a conversation yet ({room})"
    return f"was assigned least recently ({room})"


def _why_nobody(candidates: Sequence[Candidate]) -> str:
    if not candidates:
        return "waiting in the queue: the department has no agents"
    online = [c for c in candidates if c.presence == ONLINE]
    if not online:
        return "waiting in the queue: no agent is online"
    return f"waiting in the queue: every online agent is at capacity ({len(online)} online)"
