"""Optional automatic acknowledgement of a new conversation, built never to start a mail loop.

Never to automatic mail (flagged by ingest: RFC 3834, DSNs, lists, robots), never to one of our
own inboxes, at most one per sender and inbox per day; and our acknowledgement itself says it is
automatic (Auto-Submitted: auto-replied), so another helpdesk does not answer it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from conversations.models import Direction, Message, MessageKind
from conversations.replies import ACKNOWLEDGEMENT, queue_reply
from inboxes.models import Inbox

logger = logging.getLogger(__name__)

PER_SENDER_WINDOW = dt.timedelta(days=1)


@dataclass
class AckResult:
    message: Message | None
    reason: str  # "sent", or why not


def acknowledge_new_conversation(message_id: int) -> AckResult:
    """Queue an acknowledgement of the incoming message that started a conversation, when allowed."""
    incoming = (Message.objects.select_related("inbox", "conversation__contact", "conversation__inbox")
                .filter(pk=message_id).first())
    if incoming is None:
        return AckResult(None, "no such message")
    inbox = incoming.inbox
    why_not = _why_not(incoming)
    if why_not:
        return AckResult(None, why_not)
    with transaction.atomic():
        # Holding the inbox row serialises acknowledgements of one inbox, so two messages from
        # one sender arriving together still get one acknowledgement.
        Inbox.objects.select_for_update().filter(pk=inbox.pk).first()
        since = timezone.now() - PER_SENDER_WINDOW
        contact = incoming.conversation.contact
        if Message.objects.filter(inbox=inbox, direction=Direction.OUT, automatic_reason=ACKNOWLEDGEMENT,
                                  conversation__contact=contact, created_at__gte=since).exists():
            return AckResult(None, "already acknowledged this sender today")
        ack = queue_reply(incoming.conversation, text="", template="acknowledgement",
                          automatic_reason=ACKNOWLEDGEMENT,
                          to=[{"name": contact.name, "address": contact.address}])
    return AckResult(ack, "sent")


def _why_not(incoming: Message) -> str:
    inbox = incoming.inbox
    if not inbox.auto_acknowledge:
        return "the inbox does not acknowledge"
    if not inbox.active:
        return "the inbox is inactive"
    if incoming.direction != Direction.IN or incoming.kind != MessageKind.EMAIL:
        return "not an incoming email"
    if incoming.is_automatic:
        return f"automatic mail ({incoming.automatic_reason or 'flagged by ingest'})"
    if incoming.archived or incoming.conversation.archived:
        return "imported history"
    sender = (incoming.from_address or "").lower()
    if not sender or sender.endswith(".invalid"):
        return "no usable sender address"
    if Inbox.objects.filter(address__iexact=sender).exists():
        return "the sender is one of our inboxes"
    if sender.split("@")[0] in {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply"}:
        return "the sender does not read replies"
    return ""


def on_conversation_started(sender: Any, message_id: int, **kwargs: Any) -> None:
    """Receiver of conversations.signals.conversation_started: acknowledge after ingest commits."""
    inbox = kwargs.get("inbox")
    if inbox is not None and not inbox.auto_acknowledge:
        return  # no task, no Redis round trip, for the inboxes that do not acknowledge
    def enqueue() -> None:
        from conversations.tasks.delivery import acknowledge_new_conversation as task

        try:
            task.delay(message_id)
        except Exception:
            logger.exception("Could not enqueue the acknowledgement of message %s", message_id)

    transaction.on_commit(enqueue)
