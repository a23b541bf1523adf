"""Optional automatic acknowledgement of a new conversation, built never to start a mail loop.

Whether one may go is the loop guard's decision (conversations.outgoing.loopguard), as for every
automatic message; our acknowledgement itself says it is automatic (Auto-Submitted:
auto-replied), so another helpdesk does not answer it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from conversations import enqueue
from conversations.models import Direction, Message, MessageKind
from conversations.outgoing.loopguard import ACKNOWLEDGEMENT, may_send_automatic
from conversations.outgoing.replies import queue_reply

logger = logging.getLogger(__name__)


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
    why_not = _not_for_acknowledging(incoming)
    if why_not:
        return AckResult(None, why_not)
    conversation = incoming.conversation
    # A task run again (acks_late redelivery) finds what it decided the first time.
    earlier = conversation.messages.filter(direction=Direction.OUT, automatic_reason=ACKNOWLEDGEMENT).first()
    if earlier is not None:
        return AckResult(earlier, "already acknowledged")
    refusal = incoming.automatic_refusals.filter(kind=ACKNOWLEDGEMENT).first()
    if refusal is not None:
        return AckResult(None, refusal.reason)
    with transaction.atomic():
        decision = may_send_automatic(conversation, incoming, ACKNOWLEDGEMENT)  # locks the inbox's row
        if not decision.allowed:
            return AckResult(None, decision.reason)
        contact = conversation.contact
        ack = queue_reply(conversation, text="", template="acknowledgement", automatic_reason=ACKNOWLEDGEMENT,
                          to=[{"name": contact.name, "address": contact.address}])
    return AckResult(ack, "sent")


def _not_for_acknowledging(incoming: Message) -> str:
    """Why this message is no case for an acknowledgement at all (not a refusal: nothing to record)."""
    inbox = incoming.inbox
    if not inbox.auto_acknowledge:
        return "the inbox does not acknowledge"
    if not inbox.active:
        return "the inbox is inactive"
    if incoming.direction != Direction.IN or incoming.kind != MessageKind.EMAIL:
        return "not an incoming email"
    if incoming.archived or incoming.conversation.archived:
        return "imported history"
    return ""


def on_conversation_started(sender: Any, message_id: int, **kwargs: Any) -> None:
    """Receiver of conversations.signals.conversation_started: acknowledge after ingest commits."""
    inbox = kwargs.get("inbox")
    if inbox is not None and not inbox.auto_acknowledge:
        return  # no task, no Redis round trip, for the inboxes that do not acknowledge
    enqueue.on_commit(enqueue.ACKNOWLEDGE_NEW_CONVERSATION, message_id)
