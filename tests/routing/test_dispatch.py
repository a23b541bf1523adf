"""New conversations ask for their department's drain once they commit, once per burst."""

from __future__ import annotations

import pytest
from django.db import transaction

from config.celery import app
from config.redis import get_redis
from conversations.models import Message
from conversations.routing import dispatch
from conversations.signals import conversation_started
from tests import factories


def queued_drains() -> int:
    with app.connection_for_read() as connection:
        return connection.default_channel.queue_declare(queue="celery", passive=True).message_count


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_new_conversations_asks_for_one_drain_of_their_department():
    app.control.purge()
    inbox = factories.InboxFactory()
    get_redis().delete(f"switchboard:routing:drain-asked:{inbox.department_id}")

    for _ in range(50):  # ingest commits one transaction per message
        with transaction.atomic():
            conversation_started.send(sender=Message, message_id=0, inbox=inbox)
    dispatch.flush_asks()

    assert get_redis().exists(f"switchboard:routing:drain-asked:{inbox.department_id}")
    assert queued_drains() == 1
    app.control.purge()
