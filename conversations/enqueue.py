"""The one way domain code hands work to Celery: by task name, when the transaction commits.

Domain modules never import the tasks package (it imports them). They call these functions,
which send the task by its registered name; `conversations.tasks` defines what runs.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import transaction

from config.celery import app

logger = logging.getLogger(__name__)

DELIVER_MESSAGE = "conversations.deliver_message"
ACKNOWLEDGE_NEW_CONVERSATION = "conversations.acknowledge_new_conversation"
ROUTE_CONVERSATION = "conversations.route_conversation"
# Assign a department's waiting conversations, oldest first, to agents with room (conversations.routing.queue).
DRAIN_QUEUE = "conversations.drain_queue"
# Mirror an agent's presence from Redis to the row (sent when a socket closes, to run after the grace).
RECONCILE_PRESENCE = "conversations.reconcile_presence"
# A delivery task drains its inbox's queue after its own message, claiming up to this many
# queued rows at a time (conversations.outgoing.delivery); a bulk answer enqueues one task per batch.
DRAIN_CLAIM_BATCH = 20


def send(task_name: str, *args: object, **options: object) -> None:
    """Send a task now. A broker that is down is logged, not raised: the rows are committed and
    the beat sweepers pick them up once it is back."""
    try:
        app.send_task(task_name, args=args, **options)
    except Exception:
        logger.exception("Could not enqueue %s%r", task_name, args)


def on_commit(task_name: str, *args: object) -> None:
    """Send a task once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: send(task_name, *args))


def enqueue_delivery(message_id: int) -> None:
    """Hand a queued message to a worker (call on commit)."""
    send(DELIVER_MESSAGE, message_id)


class _Deliveries:
    """The replies one transaction queued, by inbox; enqueued together when it commits."""

    def __init__(self, hooks: list) -> None:
        self.hooks = hooks  # the connection's on-commit list of this transaction (a new one per transaction)
        self.by_inbox: dict[int, list[int]] = {}

    def enqueue(self) -> None:
        step = max(1, min(DRAIN_CLAIM_BATCH, int(settings.DELIVERY_DRAIN_MAX_MESSAGES)))
        for ids in self.by_inbox.values():
            for message_id in ids[::step]:
                enqueue_delivery(message_id)


_deliveries = threading.local()


def deliver_on_commit(message_id: int, inbox_id: int) -> None:
    """Enqueue the delivery of a queued message when the transaction that queued it commits.

    Each delivery task drains its inbox's queue after its own message (delivery.deliver_and_drain).
    So a transaction that queues many replies of one inbox (a bulk answer) enqueues one task
    per DRAIN_CLAIM_BATCH of them, not one each: a task costs ~1 ms to publish, and the
    extra ones would find their message already sent. Several tasks still let several workers
    share the burst; a drain that reaches its budget enqueues a task for what is left. Should
    a task be lost, the sweeper dispatches its replies.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        enqueue_delivery(message_id)
        return
    batch = getattr(_deliveries, "current", None)
    # Django gives each transaction (and each savepoint rollback) a new on-commit list.
    if batch is None or batch.hooks is not connection.run_on_commit:
        batch = _deliveries.current = _Deliveries(connection.run_on_commit)
        transaction.on_commit(batch.enqueue)
    batch.by_inbox.setdefault(inbox_id, []).append(message_id)
