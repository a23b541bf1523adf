"""A delivery task drains its inbox's queue over one connection, each message still claimed,
marked and reported on its own; two workers draining one inbox send every message once."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from conversations import enqueue
from conversations.models import DeliveryStatus, Message
from conversations.outgoing import delivery, drain
from conversations.outgoing.replies import queue_reply
from inboxes import smtp
from tests.outgoing.conftest import wait_until


@pytest.fixture(autouse=True)
def _fresh_connections():
    # Draining keeps its connection in this process's pool: each test starts and ends without one.
    smtp.close_pool()
    yield
    smtp.close_pool()


def _statuses(messages: list[Message]) -> list[str]:
    return [m.delivery_status for m in Message.objects.filter(pk__in=[m.pk for m in messages]).order_by("pk")]


@pytest.mark.django_db
def test_one_task_delivers_its_inboxs_queued_replies_over_one_connection(
        smtp_server_factory, inbox_for, customer_thread, event_ear, django_capture_on_commit_callbacks):
    server = smtp_server_factory(username="support", password="pw")
    conversation, _ = customer_thread(inbox_for(server))
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(5)]  # no commit here: no tasks

    with django_capture_on_commit_callbacks(execute=True):
        outcomes = delivery.deliver_and_drain(messages[2].pk)  # its own first, then the rest by id

    assert list(outcomes) == [messages[2].pk, messages[0].pk, messages[1].pk, messages[3].pk, messages[4].pk]
    assert {o.status for o in outcomes.values()} == {DeliveryStatus.SENT}
    assert _statuses(messages) == [DeliveryStatus.SENT] * 5
    assert len(server.wait_for(5)) == 5
    assert len(server.auth_attempts) == 1  # one login: one connection
    for message in Message.objects.filter(pk__in=[m.pk for m in messages]):
        assert [(h["from"], h["to"]) for h in message.delivery_history] == [
            ("", "queued"), ("queued", "sending"), ("sending", "sent")]
        assert message.data_sent_at is not None
        assert message.delivery_attempts == 1
    statuses = [(e["payload"]["message"], e["payload"]["status"]) for e in event_ear.receive_all()
                if e["type"] == "message.status"]
    assert len(statuses) == 10
    assert all(statuses.count((str(m.public_id), s)) == 1 for m in messages for s in ("sending", "sent"))
    # The tasks of the drained messages find nothing left to do.
    assert delivery.deliver_and_drain(messages[4].pk) == {messages[4].pk: delivery.Outcome("not claimed")}


@pytest.mark.django_db
def test_a_drain_claims_in_batches_and_keeps_each_messages_own_history(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    count = 2 * enqueue.DRAIN_CLAIM_BATCH + 5
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(count)]
    # One of them failed once before (greylisted): its claim must carry that history on.
    retried = messages[-1]
    Message.objects.filter(pk=retried.pk).update(
        delivery_attempts=1, delivery_history=[*retried.delivery_history, {
            "at": "2025-01-01T00:00:00+00:00", "from": "sending", "to": "queued", "detail": "451 try later"}])

    outcomes = delivery.deliver_and_drain(messages[0].pk)

    assert list(outcomes) == [m.pk for m in messages]
    assert _statuses(messages) == [DeliveryStatus.SENT] * count
    assert len(smtp_server.wait_for(count)) == count
    retried.refresh_from_db()
    assert retried.delivery_attempts == 2
    assert [(h["from"], h["to"]) for h in retried.delivery_history] == [
        ("", "queued"), ("sending", "queued"), ("queued", "sending"), ("sending", "sent")]
    assert retried.delivery_history[2]["detail"] == "attempt 2"


@pytest.mark.django_db
def test_a_drain_near_the_hourly_cap_claims_no_more_than_it_may_send(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, max_sends_per_hour=4))
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(8)]

    outcomes = delivery.deliver_and_drain(messages[0].pk)

    assert [o.status for o in outcomes.values()] == ["sent"] * 4 + ["deferred"]
    assert _statuses(messages) == [DeliveryStatus.SENT] * 4 + [DeliveryStatus.QUEUED] * 4
    assert list(Message.objects.filter(pk__in=[m.pk for m in messages[4:]]).values_list(
        "delivery_attempts", flat=True)) == [0] * 4


@pytest.mark.django_db
def test_a_transient_failure_stops_the_drain_and_leaves_the_rest_queued(
        smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory()
    server.behaviour.refuse = {"greylisted@example.test": "451 4.7.1 Greylisted, try later"}
    conversation, _ = customer_thread(inbox_for(server))
    first = queue_reply(conversation, text="fine")
    unlucky = queue_reply(conversation, text="later", to=["greylisted@example.test"])
    rest = [queue_reply(conversation, text=f"waits {n}") for n in range(3)]

    outcomes = delivery.deliver_and_drain(first.pk)

    assert [o.status for o in outcomes.values()] == [DeliveryStatus.SENT, DeliveryStatus.QUEUED]
    unlucky.refresh_from_db()
    assert unlucky.next_attempt_at is not None
    assert "451 4.7.1 Greylisted" in unlucky.delivery_last_error
    assert outcomes[unlucky.pk].retry_at == unlucky.next_attempt_at  # the task schedules its retry
    assert _statuses(rest) == [DeliveryStatus.QUEUED] * 3
    assert list(Message.objects.filter(pk__in=[m.pk for m in rest]).values_list("delivery_attempts", flat=True)) \
        == [0, 0, 0]
    assert len(server.received) == 1

    # Their own tasks (or the sweeper) take them up later, still one by one and once each.
    assert delivery.deliver_and_drain(rest[0].pk)[rest[0].pk].status == DeliveryStatus.SENT
    assert _statuses(rest) == [DeliveryStatus.SENT] * 3
    assert len(server.wait_for(4)) == 4


@pytest.mark.django_db
def test_the_hourly_cap_stops_the_drain(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, max_sends_per_hour=2))
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(4)]

    outcomes = delivery.deliver_and_drain(messages[0].pk)

    assert [o.status for o in outcomes.values()] == ["sent", "sent", "deferred"]
    assert _statuses(messages) == [DeliveryStatus.SENT, DeliveryStatus.SENT, DeliveryStatus.QUEUED,
                                   DeliveryStatus.QUEUED]
    assert len(smtp_server.received) == 2
    assert delivery.deliver_and_drain(messages[3].pk)[messages[3].pk].status == "deferred"
    assert len(smtp_server.received) == 2


@pytest.mark.django_db
def test_an_inactive_inbox_is_not_drained(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, active=False))
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(3)]

    assert [o.status for o in delivery.deliver_and_drain(messages[0].pk).values()] == ["deferred"]
    assert _statuses(messages) == [DeliveryStatus.QUEUED] * 3
    assert smtp_server.received == []


@pytest.mark.django_db(transaction=True)
def test_two_real_workers_draining_one_inbox_send_each_reply_exactly_once(
        smtp_server, inbox_for, customer_thread, celery_worker_factory):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    celery_worker_factory(name="left")
    celery_worker_factory(name="right")

    with transaction.atomic():  # two tasks (one per 20 replies) are enqueued on commit; both workers race
        messages = [queue_reply(conversation, text=f"reply {n}") for n in range(40)]

    wait_until(lambda: _statuses(messages) == [DeliveryStatus.SENT] * 40, timeout=120)
    time.sleep(2)  # let the leftover tasks run: each must find nothing to send
    received = smtp_server.received
    assert len(received) == 40
    assert sorted(r.message["Message-ID"] for r in received) == sorted(f"<{m.message_id}>" for m in messages)
    for message in Message.objects.filter(pk__in=[m.pk for m in messages]):
        assert message.delivery_attempts == 1
        assert [h["to"] for h in message.delivery_history] == ["queued", "sending", "sent"]


def test_a_bulk_answer_takes_a_task_per_twenty_replies_and_a_drain_at_its_budget_hands_over(
        smtp_server, inbox_for, customer_thread, celery_worker_factory):
    from config.celery import app

    conversation, _ = customer_thread(inbox_for(smtp_server))
    app.control.purge()
    with transaction.atomic():
        messages = [queue_reply(conversation, text=f"reply {n}") for n in range(45)]
    with app.connection_for_write() as connection:
        assert connection.default_channel.client.llen("celery") == 3  # replies 1, 21 and 41

    # Each drain stops after 7 replies: three tasks alone would leave 24 replies to the sweeper,
    # which does not run here. Each drain at its budget enqueues a task for the rest.
    celery_worker_factory(name="short", DELIVERY_DRAIN_MAX_MESSAGES="7")
    wait_until(lambda: _statuses(messages) == [DeliveryStatus.SENT] * 45, timeout=120)
    assert sorted(r.message["Message-ID"] for r in smtp_server.wait_for(45)) == sorted(
        f"<{m.message_id}>" for m in messages)


@pytest.mark.django_db
def test_each_drained_message_leaves_with_its_own_content_and_a_broken_one_fails_alone(
        smtp_server, inbox_for, customer_thread):
    # While one message's data is on the wire, the next one's envelope goes out behind it:
    # what each recipient gets must still be its own message, and a message that cannot be
    # built fails on its own turn without costing the others theirs.
    conversation, _ = customer_thread(inbox_for(smtp_server))
    messages = [queue_reply(conversation, text=f"reply number {n}") for n in range(6)]
    Message.objects.filter(pk=messages[3].pk).update(to=[{"name": "no address"}])

    outcomes = delivery.deliver_and_drain(messages[0].pk)

    assert [outcomes[m.pk].status for m in messages] == [DeliveryStatus.SENT] * 3 + [
        DeliveryStatus.FAILED] + [DeliveryStatus.SENT] * 2
    assert "KeyError" in Message.objects.get(pk=messages[3].pk).delivery_last_error
    received = smtp_server.wait_for(5)
    assert len(received) == 5
    ids_and_texts = sorted((m.message_id, f"reply number {n}") for n, m in enumerate(messages) if n != 3)
    got = sorted((r.message["Message-ID"].strip("<>"), r.message.get_body(("plain",)).get_content().strip())
                 for r in received)
    assert got == ids_and_texts


@pytest.mark.django_db
def test_a_drain_reads_its_next_replies_as_the_orm_would(smtp_server, inbox_for, customer_thread):
    from django.utils import timezone

    from conversations.outgoing.replies import AttachmentUpload

    conversation, _ = customer_thread(inbox_for(smtp_server))
    plain = queue_reply(conversation, text="Plain", cc=["bob@example.test"])
    attached = queue_reply(conversation, text="With a file",
                           attachments=[AttachmentUpload("notes.txt", b"hello", "text/plain")])

    loaded = drain.next_queued(conversation.inbox, timezone.now(), newest_first=True, limit=5)

    assert [m.pk for m in loaded] == [attached.pk, plain.pk]
    assert [m.has_attachments for m in loaded] == [True, False]
    for message in loaded:
        expected = Message.objects.get(pk=message.pk)
        for name in drain.FIELDS:
            assert getattr(message, name) == getattr(expected, name), name
        assert (message.conversation.pk, message.conversation.public_id, message.conversation.department_id,
                message.conversation.created_at) == (conversation.pk, conversation.public_id,
                                                     conversation.department_id, conversation.created_at)
