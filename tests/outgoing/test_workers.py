"""With real Celery workers: a committed reply is delivered, and a worker killed mid-delivery
never makes the customer receive it twice."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction

from conversations.models import DeliveryStatus, Message
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from conversations.tasks.delivery import deliver_message
from tests.outgoing.conftest import wait_until
from tests.servers.smtp import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _status(message: Message) -> str:
    message.refresh_from_db()
    return message.delivery_status


def test_a_committed_reply_is_delivered_by_a_worker_and_the_agent_hears_of_it(
        smtp_server_factory, inbox_for, customer_thread, celery_worker_factory, event_ear):
    server = smtp_server_factory(security="ssl", username="support", password="pw")
    conversation, _ = customer_thread(inbox_for(server))
    celery_worker_factory(name="deliver")

    message = queue_reply(conversation, text="From a real worker")  # autocommit: enqueued at once

    wait_until(lambda: _status(message) == DeliveryStatus.SENT, timeout=60)
    assert len(server.wait_for(1)) == 1
    events = event_ear.receive_all(timeout=2)
    assert [(e["type"], e["payload"]["status"]) for e in events] == [
        ("message.created", "queued"), ("message.status", "sending"), ("message.status", "sent")]
    assert {e["payload"]["message"] for e in events} == {str(message.public_id)}


def test_a_worker_killed_before_the_data_left_is_recovered_and_sends_once(
        smtp_server_factory, inbox_for, customer_thread, celery_worker_factory):
    server = smtp_server_factory(behaviour=Behaviour(delay_before_rcpt=60))
    conversation, _ = customer_thread(inbox_for(server))
    worker = celery_worker_factory(name="doomed")
    message = queue_reply(conversation, text="Survive this")
    wait_until(lambda: _status(message) == DeliveryStatus.SENDING, timeout=60)

    worker.kill()  # SIGKILL while the server is slow to answer RCPT: the data never left
    server.behaviour.delay_before_rcpt = 0
    message.refresh_from_db()
    assert message.data_sent_at is None
    celery_worker_factory(name="phoenix")
    sweep = delivery.sweep_deliveries(stuck_after=dt.timedelta(0))
    assert sweep.requeued == [message.pk]
    for message_id in sweep.due + sweep.due:  # a duplicate dispatch, as a redelivered task would be
        deliver_message.delay(message_id)

    wait_until(lambda: _status(message) == DeliveryStatus.SENT, timeout=60)
    assert len(server.wait_for(1)) == 1
    assert [(h["from"], h["to"]) for h in message.delivery_history] == [
        ("", "queued"), ("queued", "sending"), ("sending", "queued"), ("queued", "sending"), ("sending", "sent")]
    assert message.delivery_attempts == 2


def test_a_worker_killed_while_a_slow_server_weighs_the_next_reply_has_recorded_the_one_before(
        smtp_server_factory, inbox_for, customer_thread, celery_worker_factory):
    # A drain holds a reply's "sent" back to share the next reply's commit; a server slow to
    # answer the next reply's commands gets it written meanwhile.
    server = smtp_server_factory(behaviour=Behaviour(delay_before_rcpt=60, delay_after_received=1))
    conversation, _ = customer_thread(inbox_for(server))
    worker = celery_worker_factory(name="doomed")
    with transaction.atomic():  # one drain takes both
        first = queue_reply(conversation, text="First")
        second = queue_reply(conversation, text="Second")
    wait_until(lambda: _status(second) == DeliveryStatus.SENDING, timeout=60)
    wait_until(lambda: _status(first) == DeliveryStatus.SENT, timeout=10)

    worker.kill()
    server.behaviour.delay_before_rcpt = 0
    celery_worker_factory(name="phoenix")
    sweep = delivery.sweep_deliveries(stuck_after=dt.timedelta(0))
    assert (sweep.requeued, sweep.uncertain) == ([second.pk], [])
    for message_id in sweep.due:
        deliver_message.delay(message_id)

    wait_until(lambda: _status(second) == DeliveryStatus.SENT, timeout=60)
    received = server.wait_for(2)
    time.sleep(1)
    assert sorted(r.message.get_body(("plain",)).get_content().split()[0] for r in server.received) == [
        "First", "Second"]
    assert len(received) == len(server.received) == 2


def test_a_worker_killed_after_the_data_left_leaves_it_uncertain_and_never_resends(
        smtp_server_factory, inbox_for, customer_thread, celery_worker_factory):
    server = smtp_server_factory(behaviour=Behaviour(hang_after_data=True))
    conversation, _ = customer_thread(inbox_for(server))
    worker = celery_worker_factory(name="doomed")
    message = queue_reply(conversation, text="Maybe twice?")
    wait_until(lambda: len(server.received) == 1, timeout=60)

    worker.kill()
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENDING
    assert message.data_sent_at is not None
    celery_worker_factory(name="phoenix")
    sweep = delivery.sweep_deliveries(stuck_after=dt.timedelta(0))
    assert sweep.uncertain == [message.pk]
    assert sweep.due == []
    deliver_message.delay(message.pk)  # a redelivered task finds nothing to claim

    time.sleep(3)  # give the redelivered task every chance to misbehave
    assert _status(message) == DeliveryStatus.UNCERTAIN
    assert len(server.received) == 1
