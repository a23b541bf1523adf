"""A department's queue: its waiting conversations, assigned oldest first to agents with room.

What waits: open, unassigned, not imported history (archived), and not automatic-only (a
conversation whose every message is automatic, such as an unmatched bounce, is stored for
the record and routed to nobody).

Claims. Two processes may drain one queue at once (a worker after an agent closes a
conversation, another after an agent comes online). Each claim is one transaction that locks
the conversation's row and then the agent's row (SELECT ... FOR UPDATE), counts the agent's
open conversations under that lock and assigns only below capacity, through actions.assign
with expected_assignee=None. The agent's row lock is what keeps capacity: two claims for one
agent are serialised, and the second counts the first's conversation. The conditional claim
(expected_assignee=None) is what keeps a conversation from being assigned twice: the second
claimant finds it taken and moves on. The order, conversation before agent, is the order
actions.assign itself takes, so a manual assignment and a drain never deadlock. On SQLite,
whose transactions here begin IMMEDIATE, the database lock serialises claims outright.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent, AgentKind, Presence
from conversations import actions
from conversations.models import Conversation, ConversationActivity, ConversationStatus, Message
from conversations.routing.strategies import AI, HUMAN, Candidate, Decision, Situation, choose
from departments.models import Department

logger = logging.getLogger(__name__)

HANDED_OFF = "handed_off"  # the activity verb of routing.handoff
DRAIN_LIMIT = 5000  # per drain; the beat sweep (and the next ask) goes on with the rest


def waiting(department_id: int) -> QuerySet[Conversation]:
    """The department's queue, oldest first (by when it started waiting, else when it began)."""
    has_human_mail = Message.objects.filter(conversation=OuterRef("pk"), is_automatic=False)
    handed_off = ConversationActivity.objects.filter(conversation=OuterRef("pk"), verb=HANDED_OFF)
    return (Conversation.objects
            .filter(department_id=department_id, status=ConversationStatus.OPEN, assignee__isnull=True,
                    archived=False)
            .filter(Exists(has_human_mail))
            .annotate(handed_off=Exists(handed_off), waiting_since=Coalesce("queued_at", "created_at"))
            .order_by("waiting_since", "pk"))


def open_load(agent_id: int) -> int:
    """Open conversations an agent holds: pending, closed and imported ones do not count."""
    return Conversation.objects.filter(assignee_id=agent_id, status=ConversationStatus.OPEN, archived=False).count()


def candidates(department: Department) -> dict[int, Candidate]:
    """The department's assignable agents with presence, load and room, in one query."""
    agents = (Agent.objects.filter(departments=department, enabled=True)
              .filter(Q(kind=AgentKind.AI) | Q(user__is_active=True))
              .annotate(load=Count("conversations", filter=Q(conversations__status=ConversationStatus.OPEN,
                                                             conversations__archived=False))))
    return {agent.pk: _candidate(agent, department, agent.load) for agent in agents}


def _candidate(agent: Agent, department: Department, load: int) -> Candidate:
    ai = agent.kind == AgentKind.AI
    presence = (Presence.ONLINE if agent.enabled else Presence.OFFLINE) if ai else agent.presence
    capacity = agent.capacity if agent.capacity is not None else department.default_capacity
    return Candidate(id=agent.pk, name=agent.name, kind=AI if ai else HUMAN, presence=presence, load=load,
                     capacity=capacity, last_assigned_at=agent.last_assigned_at)


@dataclass
class DrainResult:
    assigned: list[int] = field(default_factory=list)  # conversation ids, in the order assigned
    queued: int = 0  # newly told why they wait


def drain(department_id: int) -> DrainResult:
    """Assign the department's waiting conversations, oldest first, while anyone has room."""
    department = Department.objects.filter(pk=department_id).first()
    result = DrainResult()
    if department is None:
        return result
    pool = candidates(department)
    # One read of the queue, in order; each claim checks the conversation still waits. What
    # arrives meanwhile asks for a drain of its own.
    for conversation in waiting(department_id)[:DRAIN_LIMIT]:
        _place(department, conversation, pool, result)
    return result


def _place(department: Department, conversation: Conversation, pool: dict[int, Candidate],
           result: DrainResult) -> None:
    situation = Situation(department.routing_strategy, ai_first=department.ai_first,
                          handed_off=conversation.handed_off)
    for _attempt in range(len(pool) + 1):
        decision = choose(situation, list(pool.values()))
        if decision.agent_id is None:
            if conversation.queued_at is None or conversation.routing_reason != decision.reason:
                actions.queue(conversation, decision.reason)
                result.queued += 1
            return
        outcome = claim(conversation, decision)
        if outcome is None:
            return  # someone else took it
        agent_id, load, assigned_at = outcome
        pool[agent_id] = _with(pool[agent_id], load, assigned_at)
        if assigned_at is not None:
            result.assigned.append(conversation.pk)
            return
        # The agent was fuller than we knew (another process assigned meanwhile): choose again.


def _with(candidate: Candidate, load: int, assigned_at: dt.datetime | None) -> Candidate:
    return Candidate(id=candidate.id, name=candidate.name, kind=candidate.kind, presence=candidate.presence,
                     load=load, capacity=candidate.capacity,
                     last_assigned_at=assigned_at or candidate.last_assigned_at)


def claim(conversation: Conversation, decision: Decision) -> tuple[int, int, dt.datetime | None] | None:
    """Assign if the conversation still waits and the agent still has room (see the module's
    docstring for the locks). None: it no longer waits. Otherwise (agent id, their load now,
    when assigned or None when they had no room)."""
    agent_id = decision.agent_id
    assert agent_id is not None
    with transaction.atomic():
        still = (Conversation.objects.select_for_update()
                 .filter(pk=conversation.pk, assignee__isnull=True, status=ConversationStatus.OPEN).first())
        if still is None:
            return None
        agent = Agent.objects.select_for_update(of=("self",)).select_related("user").filter(pk=agent_id).first()
        if agent is None:
            return None
        load = open_load(agent_id)
        capacity = agent.capacity if agent.capacity is not None else still.department.default_capacity
        if load >= capacity:
            return agent_id, load, None
        try:
            row = actions.assign(still, agent, by=None, reason=decision.reason, expected_assignee=None)
        except actions.Conflict:
            return None
        except actions.ActionError:
            logger.warning("Could not assign conversation %s to agent %s", still.pk, agent_id, exc_info=True)
            return agent_id, capacity, None  # treat them as full for this drain
    return agent_id, load + 1, row.assigned_at or timezone.now()
