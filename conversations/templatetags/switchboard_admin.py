"""The admin's at-a-glance panels: an inbox's health on its page, the dashboard and getting started on the index.

A template tag library of the top layer: it may count conversations, messages and agents,
which the inbox admin (a lower layer) cannot import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, Presence
from conversations.models import (
    Conversation,
    ConversationStatus,
    DeliveryStatus,
    Direction,
    Message,
    QuarantinedMessage,
    QuarantineStatus,
)
from departments.models import Department
from inboxes.models import ConnectionStatus, Inbox, OutgoingStatus
from inboxes.status import inbox_badge, next_poll_at

register = template.Library()


@register.inclusion_tag("admin/switchboard/health.html")
def inbox_health(inbox: Inbox) -> dict[str, Any]:
    now = timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    counts = Message.objects.filter(inbox=inbox).aggregate(
        today=Count("pk", filter=Q(direction=Direction.IN, created_at__gte=today)),
        week=Count("pk", filter=Q(direction=Direction.IN, created_at__gte=now - dt.timedelta(days=7))),
        failed=Count("pk", filter=Q(delivery_status=DeliveryStatus.FAILED)),
        uncertain=Count("pk", filter=Q(delivery_status=DeliveryStatus.UNCERTAIN)),
    )
    quarantined = QuarantinedMessage.objects.filter(inbox=inbox, status=QuarantineStatus.HELD).count()
    messages = reverse("admin:conversations_message_changelist")
    return {"inbox": inbox, "counts": counts, "quarantined": quarantined, "next_poll_at": next_poll_at(inbox),
            "failed_url": f"{messages}?inbox={inbox.pk}&delivery_status__exact=failed",
            "uncertain_url": f"{messages}?inbox={inbox.pk}&delivery_status__exact=uncertain",
            "quarantine_url": f"{reverse('admin:conversations_quarantinedmessage_changelist')}?inbox__id__exact="
                              f"{inbox.pk}&status__exact=held"}


@register.inclusion_tag("admin/switchboard/dashboard.html")
def switchboard_dashboard() -> dict[str, Any]:
    inboxes = list(Inbox.objects.all())
    if not inboxes:
        return {"getting_started": _getting_started()}
    in_error = [(inbox, inbox_badge(inbox)) for inbox in inboxes
                if inbox.connection_status == ConnectionStatus.ERROR or inbox.outgoing_status == OutgoingStatus.ERROR]
    queues = (Conversation.objects.filter(status=ConversationStatus.OPEN, assignee__isnull=True)
              .values("department__name").annotate(waiting=Count("pk")).order_by("department__name"))
    online = Agent.objects.filter(presence=Presence.ONLINE).order_by("name")
    return {"in_error": in_error, "queues": list(queues), "online": list(online), "inbox_count": len(inboxes)}


def _getting_started() -> list[dict[str, Any]]:
    return [
        {"done": Department.objects.exists(), "text": "Add a department: who works the mailbox and how "
         "conversations are routed.", "url": reverse("admin:departments_department_add")},
        {"done": Agent.objects.exists(), "text": "Add an agent (a person with a user, or an AI) to the department.",
         "url": reverse("admin:agents_agent_add")},
        {"done": False, "text": "Connect a mailbox: pick your provider, enter the address and password.",
         "url": reverse("admin:inboxes_inbox_add")},
        {"done": False, "text": "Press Test connection on the inbox's page: every step should pass.",
         "url": reverse("admin:inboxes_inbox_add")},
    ]
