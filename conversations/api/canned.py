"""Canned responses' variables, filled in on the server: exactly these four, as plain text.

Not the Django template engine: a response's body is user text, and a template language would
let its author read context they were never meant to (`{{ settings }}`, filters, tags).
"""

from __future__ import annotations

import re

from django.db.models import Q, QuerySet
from rest_framework.request import Request

from agents.models import Agent
from conversations.api.permissions import departments
from conversations.models import CannedResponse, Conversation

VARIABLE = re.compile(r"\{\{\s*(contact\.name|agent\.name|inbox\.name|conversation\.id)\s*\}\}")


def render(body: str, conversation: Conversation | None, agent: Agent | None) -> str:
    """The body with the known variables replaced; anything else stays as written."""
    values = {
        "contact.name": conversation.contact.name or conversation.contact.address if conversation else "",
        "agent.name": agent.name if agent else "",
        "inbox.name": (conversation.inbox.sender_name or conversation.inbox.display_name) if conversation else "",
        "conversation.id": str(conversation.public_id) if conversation else "",
    }
    return VARIABLE.sub(lambda match: values[match.group(1)], body)


def usable(request: Request) -> QuerySet[CannedResponse]:
    """The caller's personal responses, and the shared ones of their departments (or of all)."""
    allowed = departments(request)
    shared = Q(owner__isnull=True)
    if allowed is not None:
        shared &= Q(department__isnull=True) | Q(department_id__in=allowed)
    mine = Q(owner_id=request.user.pk) if request.user.pk is not None else Q(pk__in=[])
    return CannedResponse.objects.filter(shared | mine).select_related("department", "owner")
