"""Tasks that deliver outgoing messages: thin wrappers around conversations.outgoing.delivery."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone

from conversations.outgoing import acknowledgements, delivery, sent_copy

# Retries further out than this are left to the sweeper: a far-off ETA sits in a worker's
# memory and, past the broker's visibility timeout, would be delivered twice anyway.
_SCHEDULE_RETRIES_WITHIN = dt.timedelta(minutes=15)


@shared_task(name="conversations.deliver_message", ignore_result=True)  # nobody reads it; saves a Redis write
def deliver_message(message_id: int) -> str:
    # Delivers this message, then drains its inbox's queue over one kept connection: the tasks
    # of the messages it took find nothing to claim and end at once.
    outcomes = delivery.deliver_and_drain(message_id)
    for some_id, outcome in outcomes.items():
        if outcome.status == "queued" and outcome.retry_at \
                and outcome.retry_at - timezone.now() < _SCHEDULE_RETRIES_WITHIN:
            deliver_message.apply_async((some_id,), eta=outcome.retry_at)
    return outcomes[message_id].status


@shared_task(name="conversations.sweep_deliveries")
def sweep_deliveries() -> dict[str, int]:
    result = delivery.sweep_deliveries()
    for message_id in result.due:
        deliver_message.delay(message_id)
    return {"due": len(result.due), "requeued": len(result.requeued), "uncertain": len(result.uncertain)}


@shared_task(name="conversations.retry_sent_copies", ignore_result=True)
def retry_sent_copies() -> int:
    return len(sent_copy.retry_sent_copies())


@shared_task(name="conversations.acknowledge_new_conversation", ignore_result=True)
def acknowledge_new_conversation(message_id: int) -> str:
    return acknowledgements.acknowledge_new_conversation(message_id).reason
