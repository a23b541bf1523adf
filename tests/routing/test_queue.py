"""Draining a department's queue: fair, within capacity, oldest first, presence honoured."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.utils import timezone

from agents.models import Presence
from conversations import actions
from conversations.models import Conversation, ConversationStatus
from conversations.routing import queue
from departments.models import RoutingStrategy
from tests.routing.conftest import online_agent, waiting_conversation


def _spread(department, strategy: str, inbox) -> Counter:
    department.routing_strategy = strategy
    department.save()
    for _ in range(100):
        waiting_conversation(inbox)
    queue.drain(department.pk)
    return Counter(Conversation.objects.filter(assignee__isnull=False).values_list("assignee__name", flat=True))


def test_round_robin_spreads_100_conversations_within_one_and_skips_the_away_and_offline(inbox):
    department = inbox.department
    for name in ("ann", "ben", "cai"):
        online_agent(department, name, capacity=40)
    online_agent(department, "dee", presence=Presence.AWAY)
    online_agent(department, "eve", presence=Presence.OFFLINE)

    counts = _spread(department, RoutingStrategy.ROUND_ROBIN, inbox)

    assert set(counts) == {"Ann", "Ben", "Cai"}
    assert sum(counts.values()) == 100
    assert max(counts.values()) - min(counts.values()) <= 1
    reasons = set(Conversation.objects.values_list("routing_reason", flat=True))
    assert all(reason.startswith("round robin: ") for reason in reasons), reasons


def test_least_busy_evens_out_loads_and_never_passes_capacity(inbox):
    department = inbox.department
    busy = online_agent(department, "ann", capacity=30)
    for _ in range(10):  # Ann starts with 10 open conversations, and some that do not count
        actions.assign(waiting_conversation(inbox), busy, by=None)
    for status in (ConversationStatus.PENDING, ConversationStatus.CLOSED):
        actions.set_status(actions.assign(waiting_conversation(inbox), busy, by=None), status, by=None)
    online_agent(department, "ben", capacity=30)
    online_agent(department, "cai", capacity=30)

    counts = _spread(department, RoutingStrategy.LEAST_BUSY, inbox)

    open_loads = Counter(Conversation.objects.filter(status=ConversationStatus.OPEN, assignee__isnull=False)
                         .values_list("assignee__name", flat=True))
    assert open_loads == {"Ann": 30, "Ben": 30, "Cai": 30}
    assert sum(open_loads.values()) == 90  # three agents of capacity 30: the last 20 wait
    waiting = Conversation.objects.filter(assignee__isnull=True)
    assert waiting.count() == 20
    assert all(c.routing_reason == "waiting in the queue: every online agent is at capacity (3 online)"
               for c in waiting)
    assert counts["Ann"] == 10 + 2 + 20  # 10 open and 2 that do not count, then 20 to reach capacity


@pytest.mark.django_db(transaction=True)
def test_nobody_online_queues_then_the_queue_drains_oldest_first_when_an_agent_comes_online(inbox, tap):
    department = inbox.department
    agent = online_agent(department, "ann", capacity=2, presence=Presence.OFFLINE)
    now = timezone.now()
    oldest = [waiting_conversation(inbox, created_at=now - dt.timedelta(minutes=m)) for m in (30, 20, 10)]

    queue.drain(department.pk)
    assert all(c.routing_reason == "waiting in the queue: no agent is online"
               for c in Conversation.objects.all())
    listening = tap(f"department.{department.pk}")

    actions.set_presence(agent, Presence.ONLINE, by=None)
    queue.drain(department.pk)  # what the drain task, enqueued on commit, runs

    assigned = list(Conversation.objects.filter(assignee=agent).order_by("assigned_at").values_list("pk", flat=True))
    assert assigned == [oldest[0].pk, oldest[1].pk]
    received = listening.take()
    assert [kind for kind, _ in received] == ["presence", "conversation.assigned", "conversation.assigned",
                                              "conversation.queued"]
    assert received[3][1] == {"conversation": str(oldest[2].public_id),
                              "reason": "waiting in the queue: every online agent is at capacity (1 online)"}
    assert received[1][1] == {"conversation": str(oldest[0].public_id), "assignee": str(agent.public_id),
                              "reason": received[1][1]["reason"]}
    assert "Ann had not been assigned" in received[1][1]["reason"]


def test_automatic_only_archived_and_manual_conversations_are_not_assigned(inbox):
    department = inbox.department
    online_agent(department, "ann")
    bounce = waiting_conversation(inbox, automatic=True)
    history = waiting_conversation(inbox, archived=True)

    queue.drain(department.pk)
    for conversation in (bounce, history):
        conversation.refresh_from_db()
        assert conversation.assignee is None
        assert conversation.routing_reason == ""

    department.routing_strategy = RoutingStrategy.MANUAL
    department.save()
    manual = waiting_conversation(inbox)
    queue.drain(department.pk)
    manual.refresh_from_db()
    assert manual.assignee is None
    assert manual.queued_at is not None
    assert manual.routing_reason == "waiting in the queue: this department's agents claim conversations themselves"


def test_an_ai_first_department_gives_the_ai_agent_first_and_a_hand_off_goes_to_a_person(inbox):
    from conversations.routing.handoff import hand_off
    from tests import factories

    department = inbox.department
    department.ai_first = True
    department.save()
    assistant = factories.AIAgentFactory(departments=[department], capacity=5)
    person = online_agent(department, "ann")
    conversation = waiting_conversation(inbox)

    queue.drain(department.pk)
    conversation.refresh_from_db()
    assert conversation.assignee == assistant
    assert conversation.routing_reason.startswith(f"AI first: {assistant.name}")

    hand_off(conversation, "the customer asks for a refund")
    queue.drain(department.pk)

    conversation.refresh_from_db()
    assert conversation.assignee == person
    note = conversation.messages.get(kind="note")
    assert note.text == "Handed off to a person: the customer asks for a refund"
