"""The seam between an AI agent and the people: hand a conversation to the human queue.

The AI runtime (a later issue) calls `hand_off` when it should not answer; the admin does it
for an AI agent's conversations. Once handed off (the activity verb HANDED_OFF), routing
offers the conversation to people only, so it does not bounce back to the AI.
"""

from __future__ import annotations

from django.db import transaction

from agents.models import Agent
from conversations import actions
from conversations.models import Conversation
from conversations.routing.queue import HANDED_OFF


def hand_off(conversation: Conversation, reason: str) -> Conversation:
    """Leave the conversation's assignee, put it in the department's human queue, and say why
    in an internal note the department sees. Unassigning drains the queue on commit."""
    reason = " ".join((reason or "").split()) or "no reason given"
    with transaction.atomic():
        holder = Agent.objects.filter(conversations=conversation).first()
        row = actions.unassign(conversation, by=holder, reason=f"handed off to a person: {reason}"[:255],
                               verb=HANDED_OFF)
        actions.add_note(row, f"Handed off to a person: {reason}", by=holder)
    return row
