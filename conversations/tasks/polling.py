"""Tasks that poll inboxes (incoming mail). Thin: ids in, conversations.incoming.polling does the work.

Both are harmless to run twice (a per-inbox lock, a cursor that only moves forward, dedup), so
acks_late redelivery after a lost worker is safe.
"""

from __future__ import annotations

from celery import shared_task

from conversations.incoming import polling


@shared_task(name="conversations.poll_inbox")
def poll_inbox(inbox_id: int) -> dict:
    return polling.poll_inbox(inbox_id).as_dict()


@shared_task(name="conversations.poll_due_inboxes")
def poll_due_inboxes() -> int:
    """Enqueue one poll for each active inbox whose interval has elapsed and whose backoff passed."""
    enqueued = 0
    for inbox_id in polling.list_due_inboxes():
        # Claimed for a while: a poll still waiting in a busy queue is not enqueued again.
        if polling.claim_poll(inbox_id, seconds=300):
            poll_inbox.delay(inbox_id)
            enqueued += 1
    return enqueued
