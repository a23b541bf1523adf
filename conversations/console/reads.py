"""What the console shows, read through the one permission rule (conversations.permissions).

A conversation outside the agent's departments does not exist for them: every read here starts
from `visible_conversations`, and a miss is a 404, never a 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.models import Agent
from conversations.api import search
from conversations.console.models import Draft, Mention, ReadMarker
from conversations.models import Attachment, Conversation, ConversationStatus, Message, Priority
from conversations.permissions import department_ids_for
from inboxes.models import Inbox

PAGE_SIZE = 50
VIEWS = ("mine", "unassigned", "departments", "all")
STATUSES = ("open", "pending", "closed", "any")


def visible_conversations(user: AbstractBaseUser) -> QuerySet[Conversation]:
    allowed = department_ids_for(user)
    rows = Conversation.objects.all()
    return rows if allowed is None else rows.filter(department_id__in=allowed)


def agent_of(user: AbstractBaseUser) -> Agent | None:
    return getattr(user, "agent", None)


@dataclass(frozen=True)
class Filters:
    view: str = "mine"
    status: str = "open"
    priority: str = ""
    inbox: str = ""
    q: str = ""
    before: datetime | None = None

    @classmethod
    def parse(cls, params: Any, manager: bool) -> Filters:
        """Unknown values fall back to the defaults: a stale bookmark still opens the console."""
        view = params.get("view", "")
        if view not in VIEWS or (view == "all" and not manager):
            view = "mine"
        status = params.get("status", "") if params.get("status", "") in STATUSES else "open"
        priority = params.get("priority", "") if params.get("priority", "") in {str(p) for p in Priority.values} else ""
        before = parse_datetime(params.get("before", "") or "")
        return cls(view, status, priority, (params.get("inbox") or "")[:64], (params.get("q") or "")[:200], before)

    def query(self, **changes: Any) -> dict[str, str]:
        values = {"view": self.view, "status": self.status, "priority": self.priority, "inbox": self.inbox,
                  "q": self.q, **changes}
        return {key: value for key, value in values.items() if value}


def _in_view(rows: QuerySet[Conversation], view: str, agent: Agent | None) -> QuerySet[Conversation]:
    if view == "mine":
        return rows.filter(assignee=agent) if agent else rows.none()
    if view == "unassigned":
        return rows.filter(assignee__isnull=True)
    return rows


def _filtered(user: AbstractBaseUser, filters: Filters) -> QuerySet[Conversation]:
    rows = visible_conversations(user)
    if filters.status != "any":
        rows = rows.filter(status=filters.status)
    if filters.priority:
        rows = rows.filter(priority=int(filters.priority))
    if filters.inbox:
        try:
            rows = rows.filter(inbox__public_id=uuid.UUID(filters.inbox))
        except ValueError:  # not an id: nothing matches, as for an unknown inbox
            rows = rows.none()
    if filters.q:
        rows = search.search(rows, filters.q)
    return rows


def list_conversations(user: AbstractBaseUser, filters: Filters) -> tuple[list[Conversation], bool]:
    """One page of the view, newest activity first, each with `unread` for this user; and whether more follow."""
    rows = _in_view(_filtered(user, filters), filters.view, agent_of(user))
    if filters.before:
        rows = rows.filter(last_message_at__lt=filters.before)
    read = ReadMarker.objects.filter(user=user, conversation=OuterRef("pk"), read_at__gte=OuterRef("last_message_at"))
    named = Mention.objects.filter(user=user, conversation=OuterRef("pk"), seen_at__isnull=True)
    rows = (rows.select_related("contact", "assignee", "inbox").annotate(seen=Exists(read), mentioned=Exists(named))
            .order_by("-last_message_at", "-id"))
    page = list(rows[: PAGE_SIZE + 1])
    for row in page:
        row.unread = not row.seen
    return page[:PAGE_SIZE], len(page) > PAGE_SIZE


def view_counts(user: AbstractBaseUser, filters: Filters) -> dict[str, int]:
    """How many conversations each view holds under the current filters, in one query."""
    agent = agent_of(user)
    counts = _filtered(user, filters).aggregate(
        departments=Count("pk"),
        unassigned=Count("pk", filter=Q(assignee__isnull=True)),
        mine=Count("pk", filter=Q(assignee=agent)) if agent else Count("pk", filter=Q(pk__in=[])),
    )
    counts["all"] = counts["departments"]
    return counts


def get_conversation(user: AbstractBaseUser, public_id: Any) -> Conversation:
    try:
        return visible_conversations(user).select_related("inbox", "department", "contact", "assignee").get(
            public_id=public_id)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None


def thread(conversation: Conversation) -> list[Message]:
    """Every message and note, oldest first (newest at the bottom), with authors and attachments."""
    return list(conversation.messages.select_related("author").prefetch_related(
        Prefetch("attachments", queryset=Attachment.objects.order_by("id"))).order_by("created_at", "id"))


def get_message(user: AbstractBaseUser, public_id: Any) -> Message:
    allowed = department_ids_for(user)
    rows = Message.objects.select_related("conversation", "author")
    if allowed is not None:
        rows = rows.filter(conversation__department_id__in=allowed)
    try:
        return rows.get(public_id=public_id)
    except Message.DoesNotExist:
        raise Http404("No such message.") from None


def added_since(conversation: Conversation, since: datetime | None, user: AbstractBaseUser) -> list[Message]:
    """Messages and notes someone else added after `since`: what an agent about to send has not seen."""
    if since is None:
        return []
    rows = conversation.messages.filter(created_at__gt=since).select_related("author").order_by("created_at", "id")
    agent = agent_of(user)
    if agent is not None:
        rows = rows.exclude(author=agent)
    return list(rows)


def colleagues(conversation: Conversation) -> list[Agent]:
    """The department's enabled agents, with their presence and load (open conversations)."""
    return list(conversation.department.agents.filter(enabled=True).annotate(
        load=Count("conversations", filter=Q(conversations__status=ConversationStatus.OPEN))).order_by("name"))


def other_conversations(user: AbstractBaseUser, conversation: Conversation) -> list[Conversation]:
    return list(visible_conversations(user).filter(contact=conversation.contact).exclude(pk=conversation.pk)
                .order_by("-last_message_at")[:10])


def visible_inboxes(user: AbstractBaseUser) -> list[Inbox]:
    allowed = department_ids_for(user)
    rows = Inbox.objects.all()
    return list(rows if allowed is None else rows.filter(department_id__in=allowed))


def workload(user: AbstractBaseUser) -> tuple[int, int | None]:
    """The agent's open conversations and capacity (their own, else their first department's default)."""
    agent = agent_of(user)
    if agent is None:
        return 0, None
    open_count = Conversation.objects.filter(assignee=agent, status=ConversationStatus.OPEN).count()
    capacity = agent.capacity
    if capacity is None:
        department = agent.departments.order_by("name").first()
        capacity = department.default_capacity if department else None
    return open_count, capacity


def draft_for(user: AbstractBaseUser, conversation: Conversation) -> Draft | None:
    return Draft.objects.filter(user=user, conversation=conversation).prefetch_related("files").first()


def mark_read(user: AbstractBaseUser, conversation: Conversation) -> None:
    now = timezone.now()
    ReadMarker.objects.update_or_create(user=user, conversation=conversation, defaults={"read_at": now})
    Mention.objects.filter(user=user, conversation=conversation, seen_at__isnull=True).update(seen_at=now)


def mark_unread(user: AbstractBaseUser, conversation: Conversation) -> None:
    ReadMarker.objects.filter(user=user, conversation=conversation).delete()
