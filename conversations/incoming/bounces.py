"""A bounce that quotes one of our outgoing messages marks that message bounced, with the reason."""

from __future__ import annotations

from datetime import datetime

from conversations.incoming.lookups import Lookups
from conversations.models import Conversation, DeliveryStatus, Message
from core.rows import lock_row, update_row
from inboxes.mailformat.bounces import Bounce

# A bounce can only be about a message that left (or may have).
_BOUNCEABLE = (DeliveryStatus.SENT, DeliveryStatus.UNCERTAIN, DeliveryStatus.SENDING, DeliveryStatus.BOUNCED)


def mark_bounced(lookups: Lookups, bounce: Bounce, *, now: datetime) -> list[tuple[int, dict]]:
    """Mark our outgoing messages of the inbox that a failure report quotes bounced, with its
    reason; the (department, payload) of each one's message.status event."""
    if not bounce.failed:
        return []  # a delay: the server keeps trying, the message may still arrive
    events = []
    recipients = ", ".join(bounce.failed_recipients)
    detail = f"{recipients}: {bounce.reason}" if recipients else bounce.reason
    for pk in lookups.outgoing(bounce.original_message_ids):
        row = lock_row(Message, pk, ("public_id", "conversation", "delivery_status", "delivery_history",
                                     "delivery_attempts"))
        if row.delivery_status not in _BOUNCEABLE:
            continue
        entry = {"at": now.isoformat(), "from": row.delivery_status, "to": DeliveryStatus.BOUNCED,
                 "detail": f"bounce received: {detail}"[:2000]}
        update_row(Message, pk, delivery_status=DeliveryStatus.BOUNCED, delivery_last_error=detail,
                   delivery_history=[*row.delivery_history, entry])
        conversation = Conversation.objects.only("public_id", "department_id").get(pk=row.conversation_id)
        events.append((conversation.department_id, {
            "conversation": str(conversation.public_id), "message": str(row.public_id),
            "status": DeliveryStatus.BOUNCED, "detail": detail[:500], "attempts": row.delivery_attempts,
        }))
    return events
