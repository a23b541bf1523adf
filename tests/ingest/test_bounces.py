"""Bounces: a delivery failure report marks the reply it quotes bounced, and opens no conversation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.incoming.ingest import ingest_email
from conversations.models import Conversation, ConversationStatus, DeliveryStatus, Direction, Message
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from conversations.signals import conversation_started
from inboxes.mailformat.parsing import parse_email
from tests import factories
from tests.ingest.conftest import FIXTURES, compose

QUOTED = "reply-1@switchboard.test"  # the Message-ID of our reply, as every fixture under bounces/ quotes it
FAILURES = ["postfix_dsn", "gmail_dsn", "gmail_text_notice", "exchange_ndr_text", "exchange_online_ndr"]


def bounce(name: str) -> bytes:
    return (FIXTURES / "bounces" / f"{name}.eml").read_bytes()


@pytest.mark.parametrize(
    ("name", "recipients", "status", "reason"),
    [
        ("postfix_dsn", ("ann@example.test",), "5.1.1", "The address does not exist: 550 5.1.1"),
        ("gmail_dsn", ("ann.customer@example.test",), "5.1.1", "The address does not exist: 550-5.1.1 The email"),
        ("gmail_text_notice", ("ann@example.test",), "5.2.2", "The mailbox is full: 550 5.2.2"),
        ("exchange_ndr_text", ("ann@corp.example",), "5.1.1", "The address does not exist: 550 5.1.1 RESOLVER"),
        ("exchange_online_ndr", ("ann@contoso.example",), "5.1.10", "The address does not exist: 550 5.1.10"),
    ],
)
def test_failure_reports_are_read_in_every_common_shape(name, recipients, status, reason):
    found = parse_email(bounce(name)).bounce

    assert found.original_message_ids == (QUOTED,)
    assert found.failed_recipients == recipients
    assert found.status == status
    assert found.reason.startswith(reason)
    assert found.failed


def test_a_delay_report_is_no_failure():
    found = parse_email(bounce("delay_dsn")).bounce

    assert found.failed is False
    assert found.status == "4.4.1"
    assert found.original_message_ids == (QUOTED,)


@pytest.mark.parametrize(
    "raw",
    [
        compose(subject="Fwd: Undeliverable: Re: Printer on fire",
                body="I got this when I wrote you:\r\n\r\nMessage-ID: <reply-1@switchboard.test>"),
        compose(subject="Returned mail", body="I am returning the parcel you sent."),
        compose(sender="Mail Delivery Subsystem <helpdesk@example.com>", subject="Question",
                body="Our team is called that, sorry. Where is my order?"),
        (FIXTURES / "hostile" / "auto_reply.eml").read_bytes(),
        (FIXTURES / "hostile" / "mailing_list.eml").read_bytes(),
    ],
)
def test_mail_people_write_is_no_bounce(raw):
    assert parse_email(raw).bounce is None


@pytest.fixture
def our_reply(inbox):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ann@example.test",
                                                 subject="Printer on fire")
    return factories.MessageFactory(
        conversation=conversation, inbox=inbox, direction=Direction.OUT, message_id=QUOTED,
        header_message_id=QUOTED, from_address=inbox.address, subject="Re: Printer on fire",
        to=[{"name": "Ann", "address": "ann@example.test"}], delivery_status=DeliveryStatus.SENT,
        delivery_history=[{"at": "2025-02-03T09:01:09+00:00", "from": "sending", "to": "sent", "detail": "250 ok"}],
    )


@pytest.fixture
def started():
    heard = []
    conversation_started.connect(lambda sender, message_id, **kw: heard.append(message_id),
                                 dispatch_uid="tests.bounces", weak=False)
    yield heard
    conversation_started.disconnect(dispatch_uid="tests.bounces")


@pytest.mark.parametrize("name", FAILURES)
def test_a_bounce_about_our_reply_marks_it_bounced_in_its_conversation(inbox, our_reply, started, name):
    result = ingest_email(inbox, bounce(name))

    our_reply.refresh_from_db()
    assert our_reply.delivery_status == DeliveryStatus.BOUNCED
    assert "does not exist" in our_reply.delivery_last_error or "full" in our_reply.delivery_last_error
    assert our_reply.delivery_history[-1]["to"] == DeliveryStatus.BOUNCED
    assert our_reply.delivery_history[-1]["from"] == DeliveryStatus.SENT
    stored = result.message
    assert stored.conversation_id == our_reply.conversation_id
    assert stored.is_automatic
    assert stored.new_participant is False
    assert result.conversation_created is False
    assert Conversation.objects.count() == 1
    assert started == []


def test_agents_hear_that_the_reply_bounced(inbox, our_reply, agent_events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest_email(inbox, bounce("postfix_dsn"))

    agent_events.mark()
    events = agent_events.receive(3)
    assert events[0] == ("message.created", {"conversation": str(our_reply.conversation.public_id),
                                             "message": str(result.message.public_id)})
    kind, payload = events[1]
    assert kind == "message.status"
    assert (payload["message"], payload["status"]) == (str(our_reply.public_id), "bounced")
    assert payload["detail"].startswith("ann@example.test: The address does not exist")
    assert events[2][0] == "test.mark"


def test_a_bounce_does_not_reopen_a_closed_conversation(inbox, our_reply):
    Conversation.objects.filter(pk=our_reply.conversation_id).update(status=ConversationStatus.CLOSED)

    result = ingest_email(inbox, bounce("gmail_dsn"))

    assert result.message.conversation_id == our_reply.conversation_id
    assert result.reopened is False
    assert Conversation.objects.get(pk=our_reply.conversation_id).status == ConversationStatus.CLOSED


def test_a_delay_report_is_kept_with_the_reply_which_stays_sent(inbox, our_reply, started):
    result = ingest_email(inbox, bounce("delay_dsn"))

    our_reply.refresh_from_db()
    assert our_reply.delivery_status == DeliveryStatus.SENT
    assert result.message.conversation_id == our_reply.conversation_id
    assert result.message.automatic_reason
    assert started == []


def test_an_unmatched_bounce_is_stored_closed_as_automatic_mail(inbox, started):
    result = ingest_email(inbox, (FIXTURES / "hostile" / "dsn_bounce.eml").read_bytes())

    message = result.message
    assert message.is_automatic
    assert message.conversation.status == ConversationStatus.CLOSED
    assert started == []


def test_a_bounce_quoting_another_inboxs_message_leaves_that_one_alone(inbox):
    other = factories.InboxFactory()
    elsewhere = factories.MessageFactory(
        conversation=factories.ConversationFactory(inbox=other), inbox=other, direction=Direction.OUT,
        message_id=QUOTED, delivery_status=DeliveryStatus.SENT)

    result = ingest_email(inbox, bounce("postfix_dsn"))

    elsewhere.refresh_from_db()
    assert elsewhere.delivery_status == DeliveryStatus.SENT
    assert result.message.conversation.status == ConversationStatus.CLOSED


def test_the_bounce_of_a_reply_that_went_out_marks_it_bounced(smtp_server, people):
    inbox = factories.InboxFactory(address="support@switchboard.test", department=people.department_a,
                                   **smtp_server.inbox_settings())
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ann@example.test")
    reply = queue_reply(conversation, text="The technician comes tomorrow.")
    delivery.deliver_message(reply.pk)
    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ann@example.test"]

    dsn = bounce("postfix_dsn").replace(QUOTED.encode(), reply.message_id.encode())
    ingest_email(inbox, dsn)

    reply = Message.objects.get(pk=reply.pk)
    assert reply.delivery_status == DeliveryStatus.BOUNCED
    assert reply.delivery_last_error.startswith("ann@example.test: The address does not exist")
    assert [entry["to"] for entry in reply.delivery_history][-2:] == [DeliveryStatus.SENT, DeliveryStatus.BOUNCED]
    assert conversation.messages.filter(direction=Direction.IN, is_automatic=True).count() == 1


def test_a_bounce_long_after_the_conversation_closed_still_joins_it(inbox, our_reply, settings):
    settings.REOPEN_WINDOW_DAYS = 7
    Conversation.objects.filter(pk=our_reply.conversation_id).update(
        status=ConversationStatus.CLOSED, closed_at=timezone.now() - timedelta(days=30))

    result = ingest_email(inbox, bounce("exchange_ndr_text"))

    assert result.message.conversation_id == our_reply.conversation_id
    assert result.conversation_created is False
    our_reply.refresh_from_db()
    assert our_reply.delivery_status == DeliveryStatus.BOUNCED
