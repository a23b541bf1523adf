"""Where a department asks for it (return_on_offline), an offline agent's open conversations go
back to the queue once the agent has been offline for the department's grace period. A
customer's reply to such a conversation changes nothing: it is open and its assignee offline,
so the same rule returns it."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from agents.models import AgentKind, Presence
from conversations import actions
from conversations.models import Conversation, ConversationStatus
from departments.models import Department


def return_offline_assignments(now: dt.datetime | None = None) -> int:
    """Unassign what offline agents hold past their departments' grace; how many returned."""
    now = now or timezone.now()
    returned = 0
    for department in Department.objects.filter(return_on_offline=True):
        since = now - dt.timedelta(seconds=department.offline_grace_seconds)
        held = (Conversation.objects.filter(department=department, status=ConversationStatus.OPEN, archived=False,
                                            assignee__kind=AgentKind.HUMAN, assignee__presence=Presence.OFFLINE,
                                            assignee__presence_changed_at__lte=since)
                .select_related("assignee"))
        for conversation in held:
            actions.unassign(conversation, by=None,
                             reason=f"returned to the queue: {conversation.assignee.name} went offline")
            returned += 1
    return returned
