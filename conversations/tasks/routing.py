"""Routing tasks: drain a department's queue, route one conversation, reconcile presence, and
the beat's safety sweep. Thin: ids in, conversations.routing does the work. All are harmless to
run twice (claims are conditional), so acks_late redelivery is safe."""

from __future__ import annotations

from celery import shared_task

from agents.models import Agent
from conversations.live import presence
from conversations.models import Conversation, ConversationStatus
from conversations.routing import dispatch, offline, queue
from departments.models import Department


@shared_task(name="conversations.drain_queue")
def drain_queue(department_id: int) -> dict:
    dispatch.drain_started(department_id)
    result = queue.drain(department_id)
    return {"assigned": len(result.assigned), "queued": result.queued}


@shared_task(name="conversations.route_conversation")
def route_conversation(conversation_id: int) -> dict:
    """Routing one conversation means draining its department's queue: older ones go first."""
    department_id = Conversation.objects.filter(pk=conversation_id).values_list("department_id", flat=True).first()
    if department_id is None:
        return {"assigned": 0, "queued": 0}
    return drain_queue(department_id)


@shared_task(name="conversations.reconcile_presence")
def reconcile_presence(agent_id: int) -> str | None:
    agent = Agent.objects.filter(pk=agent_id).first()
    return presence.reconcile(agent).presence if agent else None


@shared_task(name="conversations.sweep_routing")
def sweep_routing() -> dict:
    """The safety net: presence as Redis says, offline agents' conversations returned where the
    department asks, and every queue with something waiting drained (a lost event, a crashed
    process)."""
    changed = presence.reconcile_all()
    returned = offline.return_offline_assignments()
    busy = (Conversation.objects.filter(status=ConversationStatus.OPEN, assignee__isnull=True, archived=False)
            .values_list("department_id", flat=True).distinct())
    assigned = 0
    for department_id in Department.objects.filter(pk__in=busy).values_list("pk", flat=True):
        assigned += len(queue.drain(department_id).assigned)
    return {"presence_changed": changed, "returned": returned, "assigned": assigned}
