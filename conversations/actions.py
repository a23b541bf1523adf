"""Every write a person or a bot makes to a conversation: the admin, the REST API, the console,
tasks and management commands call these and nothing else.

Each action validates its input, writes in one transaction (the conversation's row locked,
so two people acting at once are ordered), records who did it (ConversationActivity), and
publishes its events after commit through conversations.live.events: a rolled-back action
publishes nothing. Who acts is `by`: a user, an agent, or None for the system (routing, a
sweep).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents.models import Agent, AgentKind, Presence
from conversations import enqueue
from conversations.live import events
from conversations.models import (
    Contact,
    Conversation,
    ConversationActivity,
    ConversationStatus,
    DeliveryStatus,
    Message,
    MessageKind,
    Priority,
)
from conversations.outgoing import delivery, replies
from departments.models import Department

Actor = AbstractBaseUser | Agent | None
# `expected_assignee` default: assign whoever holds the conversation now.
ANYONE = object()


class ActionError(ValidationError):
    """An action that cannot be done as asked; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})
        self.field = field


class Conflict(Exception):
    """The action lost a race: someone changed the conversation first. `conversation` is as it is now."""

    def __init__(self, message: str, conversation: Conversation) -> None:
        super().__init__(message)
        self.conversation = conversation


@dataclass(frozen=True)
class _Who:
    user: AbstractBaseUser | None
    agent: Agent | None
    label: str


def _who(by: Actor) -> _Who:
    if by is None:
        return _Who(None, None, "system")
    if isinstance(by, Agent):
        return _Who(by.user if by.user_id else None, by, by.name)
    agent = Agent.objects.filter(user=by).first()
    return _Who(by, agent, (agent.name if agent else "") or by.get_username())


def _record(conversation: Conversation, verb: str, who: _Who, **details: Any) -> None:
    ConversationActivity.objects.create(conversation=conversation, verb=verb, actor_user=who.user,
                                        actor_agent=who.agent, actor_label=who.label[:255], details=details)


def _locked(conversation: Conversation) -> Conversation:
    """The conversation's row as it is now, locked until the transaction ends."""
    # Lock first, then read with the joins: PostgreSQL refuses FOR UPDATE on the nullable side of
    # the assignee's outer join, and a row re-read after waiting for the lock keeps the joined
    # rows it had before (the new assignee's id beside the old assignee).
    Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk").get()
    return Conversation.objects.select_related("department", "assignee", "inbox").get(pk=conversation.pk)


def _ids(conversation: Conversation) -> dict[str, str]:
    return {"conversation": str(conversation.public_id)}


def _updated(conversation: Conversation, **changes: Any) -> None:
    events.publish(events.CONVERSATION_UPDATED, conversation.department_id, {**_ids(conversation), **changes},
                   agents=(conversation.assignee_id,))


# ---------------------------------------------------------------------------
# Assignment
# ---------------------------------------------------------------------------
def assign(conversation: Conversation, agent: Agent, *, by: Actor, reason: str = "",
           expected_assignee: Agent | object | None = ANYONE) -> Conversation:
    """Give the conversation to `agent`, a member of its department.

    `expected_assignee`: assign only if the conversation is still held by this agent (None: still
    unassigned); otherwise raise Conflict with the conversation as it is. Routing and "assign to
    me" pass it, so two people claiming one conversation never both win.
    """
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        if expected_assignee is not ANYONE:
            expected_id = expected_assignee.pk if isinstance(expected_assignee, Agent) else None
            if row.assignee_id != expected_id:
                holder = row.assignee.name if row.assignee else "nobody"
                raise Conflict(f"The conversation was just assigned to {holder}.", row)
        _check_assignable(row, agent)
        if row.assignee_id == agent.pk:
            return row
        previous = row.assignee_id
        now = timezone.now()
        reason = reason or f"assigned by {who.label}"
        Conversation.objects.filter(pk=row.pk).update(assignee=agent, assigned_at=now, queued_at=None,
                                                      routing_reason=reason[:255], updated_at=now)
        Agent.objects.filter(pk=agent.pk).update(last_assigned_at=now)
        row.assignee, row.assigned_at, row.queued_at, row.routing_reason = agent, now, None, reason[:255]
        _record(row, "assigned", who, assignee=str(agent.public_id), reason=reason)
        events.publish(events.CONVERSATION_ASSIGNED, row.department_id,
                       {**_ids(row), "assignee": str(agent.public_id), "reason": reason},
                       agents=(agent.pk, previous))
    return row


def _check_assignable(conversation: Conversation, agent: Agent) -> None:
    if not agent.enabled or (agent.kind == AgentKind.HUMAN and agent.user_id and not agent.user.is_active):
        raise ActionError("assignee", f"{agent.name} is not active.")
    if not agent.departments.filter(pk=conversation.department_id).exists():
        raise ActionError("assignee", f"{agent.name} is not in the {conversation.department.name} department.")


def unassign(conversation: Conversation, *, by: Actor, reason: str = "", verb: str = "unassigned") -> Conversation:
    """Put the conversation back in its department's queue, assigned to nobody. `verb` names
    it in the activity record (routing's hand-off says "handed_off")."""
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        if row.assignee_id is None:
            return row
        previous = row.assignee_id
        _to_queue(row, reason or f"unassigned by {who.label}")
        _record(row, verb, who, reason=row.routing_reason)
        events.publish(events.CONVERSATION_ASSIGNED, row.department_id,
                       {**_ids(row), "assignee": None, "reason": row.routing_reason}, agents=(previous,))
        _queued(row)
        _drain_on_commit(row.department_id)
    return row


def queue(conversation: Conversation, reason: str, *, by: Actor = None) -> Conversation:
    """Say why an unassigned conversation waits in its department's queue. It keeps its place:
    the time it started waiting is set once, so the queue stays oldest first."""
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        if row.assignee_id is not None or (row.queued_at and row.routing_reason == reason[:255]):
            return row
        now = timezone.now()
        row.queued_at, row.routing_reason = row.queued_at or now, reason[:255]
        Conversation.objects.filter(pk=row.pk).update(queued_at=row.queued_at, routing_reason=row.routing_reason,
                                                      updated_at=now)
        _record(row, "queued", who, reason=row.routing_reason)
        _queued(row)
    return row


def _to_queue(row: Conversation, reason: str) -> None:
    now = timezone.now()
    Conversation.objects.filter(pk=row.pk).update(assignee=None, assigned_at=None, queued_at=now,
                                                  routing_reason=reason[:255], updated_at=now)
    row.assignee, row.assigned_at, row.queued_at, row.routing_reason = None, None, now, reason[:255]


def _queued(row: Conversation) -> None:
    events.publish(events.CONVERSATION_QUEUED, row.department_id,
                   {**_ids(row), "reason": row.routing_reason})


def _drain_on_commit(*department_ids: int) -> None:
    """Capacity freed or a conversation waits: routing assigns the queue once this commits."""
    for department_id in dict.fromkeys(department_ids):
        enqueue.on_commit(enqueue.DRAIN_QUEUE, department_id)


def transfer(conversation: Conversation, department: Department, *, by: Actor, reason: str = "") -> Conversation:
    """Move the conversation to another department: it leaves its assignee and waits in that
    department's queue (routing assigns it there)."""
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        if row.department_id == department.pk:
            raise ActionError("department", f"The conversation is already in {department.name}.")
        old_department, previous = row.department_id, row.assignee_id
        reason = reason or f"transferred from {row.department.name} by {who.label}"
        Conversation.objects.filter(pk=row.pk).update(department=department)
        row.department = department
        _to_queue(row, reason)
        _record(row, "transferred", who, department=str(department.public_id), reason=reason)
        # The old department's agents see it leave; the new one's see it arrive.
        events.publish(events.CONVERSATION_UPDATED, old_department,
                       {**_ids(row), "department": str(department.public_id)}, agents=(previous,))
        events.publish(events.CONVERSATION_CREATED, department.pk, _ids(row))
        _queued(row)
        _drain_on_commit(department.pk, old_department)
    return row


# ---------------------------------------------------------------------------
# Status, priority, subject
# ---------------------------------------------------------------------------
def set_status(conversation: Conversation, status: str, *, by: Actor) -> Conversation:
    """Open, pending or closed. Closing stamps closed_at; reopening clears it."""
    if status not in ConversationStatus.values:
        raise ActionError("status", f"{status!r} is not a status; use one of {', '.join(ConversationStatus.values)}.")
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        if row.status == status:
            return row
        old, now = row.status, timezone.now()
        closed_at = now if status == ConversationStatus.CLOSED else None
        Conversation.objects.filter(pk=row.pk).update(status=status, closed_at=closed_at, updated_at=now)
        row.status, row.closed_at = status, closed_at
        verb = {"closed": "closed", "open": "reopened" if old == "closed" else "opened"}.get(status, status)
        _record(row, verb, who, old=old, new=status)
        _updated(row, status=status)
        if old == ConversationStatus.OPEN or row.assignee_id is None:
            _drain_on_commit(row.department_id)  # its assignee has room again, or it waits to be routed
    return row


def close(conversation: Conversation, *, by: Actor) -> Conversation:
    return set_status(conversation, ConversationStatus.CLOSED, by=by)


def reopen(conversation: Conversation, *, by: Actor) -> Conversation:
    return set_status(conversation, ConversationStatus.OPEN, by=by)


def set_priority(conversation: Conversation, priority: int, *, by: Actor) -> Conversation:
    if priority not in Priority.values:
        names = ", ".join(f"{value} ({label})" for value, label in Priority.choices)
        raise ActionError("priority", f"{priority!r} is not a priority; use one of {names}.")
    return _set_field(conversation, "priority", priority, by=by)


def set_subject(conversation: Conversation, subject: str, *, by: Actor) -> Conversation:
    subject = " ".join((subject or "").split())[:998]
    if not subject:
        raise ActionError("subject", "A subject cannot be empty.")
    return _set_field(conversation, "subject", subject, by=by)


def _set_field(conversation: Conversation, field: str, value: object, *, by: Actor) -> Conversation:
    """Change one plain field of the conversation (validated by the caller): recorded under the
    field's name as verb, and announced as conversation.updated; unchanged, nothing happens."""
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        old = getattr(row, field)
        if old == value:
            return row
        Conversation.objects.filter(pk=row.pk).update(**{field: value, "updated_at": timezone.now()})
        setattr(row, field, value)
        _record(row, field, who, old=old, new=value)
        _updated(row, **{field: value})
    return row


# ---------------------------------------------------------------------------
# Messages: replies, notes, resending
# ---------------------------------------------------------------------------
def queue_reply(conversation: Conversation, *, by: Actor, text: str, html: str | None = None,
                to: Iterable[Any] | None = None, cc: Iterable[Any] | None = None, bcc: Iterable[Any] | None = None,
                attachments: Iterable[Any] = (), priority: int | None = None) -> Message:
    """Queue an email reply (built once, stored, delivered on commit). Raises ReplyValidationError
    (an ActionError's sibling, naming the field and address) for a bad recipient."""
    who = _who(by)
    if not (text or "").strip() and not (html or "").strip():
        raise ActionError("text", "A reply needs some text.")
    with transaction.atomic():
        row = _locked(conversation)
        message = replies.queue_reply(row, author=who.agent, text=text, html=html, to=to, cc=cc, bcc=bcc,
                                      attachments=attachments, priority=priority)
        _record(row, "replied", who, message=str(message.public_id))
    return message


def add_note(conversation: Conversation, text: str, *, by: Actor) -> Message:
    """An internal note: never emailed, seen by the department."""
    if not (text or "").strip():
        raise ActionError("text", "A note needs some text.")
    who = _who(by)
    with transaction.atomic():
        row = _locked(conversation)
        note = replies.queue_reply(row, author=who.agent, text=text, kind=MessageKind.NOTE)
        _record(row, "noted", who, message=str(note.public_id))
    return note


def resend(message: Message, *, by: Actor) -> bool:
    """Queue an uncertain or failed reply again, deliberately, with the same Message-ID.
    False when it is not uncertain or failed (nothing changes)."""
    if message.delivery_status not in (DeliveryStatus.UNCERTAIN, DeliveryStatus.FAILED):
        return False
    who = _who(by)
    with transaction.atomic():
        if not delivery.resend_message(message.pk, by=who.label):
            return False
        _record(message.conversation, "resent", who, message=str(message.public_id))
    return True


# ---------------------------------------------------------------------------
# Contacts
# ---------------------------------------------------------------------------
def rename_contact(contact: Contact, name: str, *, by: Actor) -> Contact:
    """Correct how a customer is called (their address is who they are and never changes).

    Recorded on each of their conversations that is not closed, and announced there as
    conversation.updated, so open lists show the new name at once."""
    name = " ".join((name or "").split())
    if len(name) > 255:
        raise ActionError("name", "A name has at most 255 characters.")
    who = _who(by)
    with transaction.atomic():
        row = Contact.objects.select_for_update().get(pk=contact.pk)
        if row.name == name:
            return row
        old, row.name = row.name, name
        Contact.objects.filter(pk=row.pk).update(name=name)
        live = Conversation.objects.filter(contact=row).exclude(status=ConversationStatus.CLOSED)
        for conversation in live.only("pk", "public_id", "department_id", "assignee_id"):
            _record(conversation, "contact_renamed", who, old=old, new=name)
            _updated(conversation, contact_name=name)
    return row


# ---------------------------------------------------------------------------
# Presence
# ---------------------------------------------------------------------------
def set_presence(agent: Agent, presence: str, *, by: Actor) -> Agent:
    """Mirror an agent's presence on the row (the live layer decides it) and tell the departments."""
    if presence not in Presence.values:
        raise ActionError("presence", f"{presence!r} is not a presence; use one of {', '.join(Presence.values)}.")
    with transaction.atomic():
        row = Agent.objects.select_for_update().get(pk=agent.pk)
        if row.presence == presence:
            return row
        now = timezone.now()
        Agent.objects.filter(pk=row.pk).update(presence=presence, presence_changed_at=now)
        row.presence, row.presence_changed_at = presence, now
        payload = {"agent": str(row.public_id), "presence": presence}
        departments = list(row.departments.values_list("pk", flat=True))
        events.publish(events.PRESENCE, departments, payload, agents=(row.pk,))
        if presence == Presence.ONLINE:
            _drain_on_commit(*departments)
    return row
