"""One way to build an outgoing email: composed once when queued, stored in Message.raw, and those
exact bytes reach the SMTP server, the email service (anymail) and the Sent folder."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest
from django.core import mail

from conversations import actions
from conversations.models import DeliveryStatus, Direction, MessageKind
from conversations.outgoing import delivery
from conversations.outgoing.replies import AttachmentUpload
from inboxes.models import Security
from tests import factories

pytestmark = pytest.mark.django_db


def _stored(message) -> bytes:
    message.refresh_from_db()
    with message.raw.open("rb") as handle:
        return handle.read()


def _sent_copy(dovecot, account, message_id: str) -> bytes:
    with dovecot.client(account.username, account.password) as imap:
        imap.select('"Sent"', readonly=True)
        _, found = imap.search(None, "HEADER", "Message-ID", message_id)
        [number] = found[0].split()
        _, data = imap.fetch(number, "(BODY.PEEK[])")
        return data[0][1]


@pytest.fixture
def mailbox(dovecot, mail_account, settings, people):
    """`mailbox(**fields)`: an inbox of department A that saves its replies to Sent in Dovecot."""
    settings.MAIL_CA_FILE = str(dovecot.ca_file)
    with dovecot.client(mail_account.username, mail_account.password) as imap:
        imap.create("Sent")

    def make(**fields):
        inbox = factories.InboxFactory(
            address="support@switchboard.test", department=people.department_a, sender_name="Acme Support",
            imap_host=dovecot.host, imap_port=dovecot.ports[Security.IMPLICIT_TLS],
            imap_security=Security.IMPLICIT_TLS, imap_username=mail_account.username,
            imap_secret=mail_account.password, import_since=dt.datetime.now(dt.UTC),
            save_to_sent=True, sent_folder="Sent", **fields)
        contact = factories.ContactFactory(address="ann@example.test", name="Ann Customer")
        conversation = factories.ConversationFactory(inbox=inbox, contact=contact, subject="Printer on fire")
        factories.MessageFactory(conversation=conversation, direction=Direction.IN,
                                 message_id="first@example.test", subject="Printer on fire")
        return conversation
    return make


def _reply(conversation, people):
    return actions.queue_reply(
        conversation, by=people.agent_a, text="Grüße — use the extinguisher.",
        html="<p>Use the <b>extinguisher</b></p>",
        cc=["Bob Colleague <bob@example.test>"], bcc=["audit@example.test"],
        attachments=[AttachmentUpload("manual.pdf", b"%PDF-1.4 pretend", "application/pdf")])


def test_the_bytes_that_reach_the_smtp_server_and_the_sent_folder_are_the_stored_bytes(
        smtp_server, mailbox, mail_account, dovecot, people):
    conversation = mailbox(**smtp_server.inbox_settings())
    reply = _reply(conversation, people)

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT

    stored = _stored(reply)
    [received] = smtp_server.wait_for(1)
    assert received.data == stored
    assert received.rcpt_tos == ["ann@example.test", "bob@example.test", "audit@example.test"]
    assert _sent_copy(dovecot, mail_account, reply.message_id) == stored
    assert b"audit@example.test" not in stored


def test_the_email_service_gets_the_stored_bytes_and_the_same_fields(smtp_server, mailbox, mail_account, dovecot,
                                                                     people):
    conversation = mailbox(outgoing_method="anymail", anymail_backend="anymail.backends.test.EmailBackend")
    reply = _reply(conversation, people)

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT

    stored = _stored(reply)
    [handed] = mail.outbox
    assert handed.message().as_bytes() == stored
    assert bytes(handed.message()) == stored
    assert _sent_copy(dovecot, mail_account, reply.message_id) == stored
    assert smtp_server.received == []
    # A service that takes structured fields gets what the bytes say.
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    params = handed.anymail_test_params
    assert params["subject"] == parsed["Subject"] == "Re: Printer on fire"
    assert str(params["from"]) == "Alice from Acme Support <support@switchboard.test>"
    assert [str(a) for a in params["to"]] == ["Ann Customer <ann@example.test>"]
    assert [str(a) for a in params["cc"]] == ["Bob Colleague <bob@example.test>"]
    assert [a.addr_spec for a in params["bcc"]] == ["audit@example.test"]
    assert params["extra_headers"]["Message-ID"] == f"<{reply.message_id}>"
    assert params["extra_headers"]["In-Reply-To"] == "<first@example.test>"
    assert "Grüße — use the extinguisher." in params["text_body"]
    assert "<b>extinguisher</b>" in params["html_body"]
    [attachment] = params["attachments"]
    assert (attachment.name, attachment.content, attachment.mimetype) == (
        "manual.pdf", b"%PDF-1.4 pretend", "application/pdf")


def test_an_envelope_that_needs_smtputf8_sends_the_stored_bytes(smtp_server, inbox_for, customer_thread):
    from conversations.outgoing.replies import queue_reply

    conversation, _ = customer_thread(inbox_for(smtp_server, address="støtte@switchboard.test"))
    reply = queue_reply(conversation, text="Hei")

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT

    [received] = smtp_server.wait_for(1)
    assert received.mail_from == "støtte@switchboard.test"
    assert received.data == _stored(reply)


def test_a_message_with_no_stored_email_fails_with_a_clear_error_and_nothing_leaves(
        smtp_server, inbox_for, customer_thread):
    from django.utils import timezone

    conversation, _ = customer_thread(inbox_for(smtp_server))
    by_hand = factories.MessageFactory(
        conversation=conversation, direction=Direction.OUT, kind=MessageKind.EMAIL,
        message_id="hand@switchboard.test", delivery_status=DeliveryStatus.QUEUED, queued_at=timezone.now(),
        to=[{"name": "", "address": "ann@example.test"}])

    assert delivery.deliver_message(by_hand.pk).status == DeliveryStatus.FAILED

    by_hand.refresh_from_db()
    assert "has no stored email" in by_hand.delivery_last_error
    assert smtp_server.received == []
