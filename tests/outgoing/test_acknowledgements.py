"""Auto-acknowledgements: one per sender per day, never to automatic mail, never a loop (the loop guard's
own rules: test_loopguard.py; a rule-breaking autoresponder: test_responder_loop.py)."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.models import DeliveryStatus, Message
from conversations.outgoing import delivery
from conversations.outgoing.acknowledgements import acknowledge_new_conversation
from tests import factories
from tests.outgoing.conftest import wait_until

pytestmark = pytest.mark.django_db


def _mail(sender: str, to: str, subject: str, message_id: str, *extra: str) -> bytes:
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: <{message_id}>",
               "Date: Sat, 21 Nov 2026 10:00:00 +0000", *extra]
    return ("\r\n".join(headers) + "\r\n\r\nHello, my printer is on fire.\r\n").encode()


@pytest.fixture
def acking_inbox(smtp_server, inbox_for):
    return inbox_for(smtp_server, auto_acknowledge=True, signature="The Acme team")


def test_a_new_conversation_is_acknowledged_as_automatic_mail(acking_inbox, smtp_server):
    raw = _mail("Ann <ann@example.test>", acking_inbox.address, "Printer", "p1@example.test")
    incoming = ingest_email(acking_inbox, raw)

    result = acknowledge_new_conversation(incoming.message.pk)
    delivery.deliver_message(result.message.pk)

    [received] = smtp_server.wait_for(1)
    email = received.message
    assert result.reason == "sent"
    assert received.rcpt_tos == ["ann@example.test"]
    assert email["Auto-Submitted"] == "auto-replied"
    assert email["X-Auto-Response-Suppress"] == "All"
    assert email["In-Reply-To"] == "<p1@example.test>"
    assert email["Subject"] == "Re: Printer"
    assert "automatic acknowledgement" in email.get_body(("plain",)).get_content()
    assert result.message.conversation_id == incoming.message.conversation_id


def test_at_most_one_acknowledgement_per_sender_per_day(acking_inbox):
    first = ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Printer", "p1@example.test"))
    second = ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Scanner", "s1@example.test"))

    assert acknowledge_new_conversation(first.message.pk).reason == "sent"
    assert acknowledge_new_conversation(second.message.pk).reason == (
        "an automatic message went to ann@example.test in the last 24 hours")
    assert acknowledge_new_conversation(first.message.pk).reason == "already acknowledged"
    assert Message.objects.filter(automatic_reason="acknowledgement").count() == 1


@pytest.mark.parametrize("header", ["Auto-Submitted: auto-generated", "Precedence: bulk",
                                    "List-Id: <announce.example.test>"])
def test_automatic_mail_is_not_acknowledged(acking_inbox, smtp_server, header):
    incoming = ingest_email(acking_inbox, _mail("robot@example.test", acking_inbox.address, "Report",
                                                "r1@example.test", header))

    result = acknowledge_new_conversation(incoming.message.pk)

    assert incoming.message.is_automatic
    assert result.message is None
    assert result.reason.startswith("automatic mail")
    assert not Message.objects.filter(direction="out").exists()


def test_mail_relayed_by_an_email_service_is_a_customer_s_and_acknowledged(acking_inbox):
    incoming = ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Printer",
                                                "p1@example.test", "Feedback-ID: 1234:web-form:esp"))

    assert incoming.message.is_automatic is False
    assert acknowledge_new_conversation(incoming.message.pk).reason == "sent"


@pytest.mark.parametrize("value", ["All", "OOF, AutoReply"])
def test_mail_that_asks_for_no_auto_replies_is_a_customer_s_and_gets_none(acking_inbox, value):
    incoming = ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Printer",
                                                "p1@example.test", f"X-Auto-Response-Suppress: {value}"))

    result = acknowledge_new_conversation(incoming.message.pk)

    assert incoming.message.is_automatic is False
    assert result.message is None
    assert result.reason == f"the sender asked for no automatic replies (X-Auto-Response-Suppress: {value})"


def test_mail_that_suppresses_only_reports_is_acknowledged(acking_inbox):
    incoming = ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Printer",
                                                "p1@example.test", "X-Auto-Response-Suppress: DR, RN, NRN"))
    assert acknowledge_new_conversation(incoming.message.pk).reason == "sent"


def test_an_inbox_without_acknowledgements_sends_none(smtp_server, inbox_for):
    inbox = inbox_for(smtp_server)
    incoming = ingest_email(inbox, _mail("ann@example.test", inbox.address, "Printer", "p1@example.test"))
    assert acknowledge_new_conversation(incoming.message.pk).message is None


def test_two_helpdesks_acknowledging_each_other_do_not_loop(smtp_server, inbox_for, people):
    """Partner's helpdesk (inbox B, reached through its alias help@partner.test) writes to ours (A)."""
    ours = inbox_for(smtp_server, auto_acknowledge=True)
    theirs = factories.InboxFactory(address="helpdesk@partner.test", auto_acknowledge=True,
                                    department=people.department_b, **smtp_server.inbox_settings())
    first = ingest_email(ours, _mail("help@partner.test", ours.address, "Order 42", "o42@partner.test"))

    ack = acknowledge_new_conversation(first.message.pk)
    delivery.deliver_message(ack.message.pk)
    [our_ack] = smtp_server.wait_for(1)

    # Our acknowledgement lands in their mailbox; their ingest sees Auto-Submitted and flags it.
    landed = ingest_email(theirs, our_ack.data)
    assert landed.conversation_created
    assert landed.message.is_automatic
    their_ack = acknowledge_new_conversation(landed.message.pk)
    assert their_ack.message is None
    assert their_ack.reason == "automatic mail (Auto-Submitted: auto-replied)"

    # Even a robot on their side that ignores Auto-Submitted gets one acknowledgement a day from us.
    robot = ingest_email(ours, _mail("help@partner.test", ours.address, "Re: Order 42 [auto]", "bot1@partner.test"))
    assert acknowledge_new_conversation(robot.message.pk).message is None
    assert len(smtp_server.received) == 1


@pytest.mark.django_db(transaction=True)
def test_ingest_of_a_new_conversation_is_acknowledged_through_a_worker(acking_inbox, smtp_server,
                                                                       celery_worker_factory):
    celery_worker_factory(name="acks")
    # ingest sends conversation_started itself; the acknowledgement task runs in the real worker.
    ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Printer", "p1@example.test"))
    # A reply in the same conversation starts nothing new, so nothing more is acknowledged.
    ingest_email(acking_inbox, _mail("ann@example.test", acking_inbox.address, "Re: Printer", "p2@example.test",
                                     "In-Reply-To: <p1@example.test>"))

    ack = wait_until(lambda: Message.objects.filter(automatic_reason="acknowledgement").first(), timeout=60)
    wait_until(lambda: Message.objects.get(pk=ack.pk).delivery_status == DeliveryStatus.SENT, timeout=60)
    [received] = smtp_server.wait_for(1)
    assert received.message["Auto-Submitted"] == "auto-replied"
    assert Message.objects.filter(automatic_reason="acknowledgement").count() == 1
