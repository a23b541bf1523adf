"""The whole loop through a real mailbox: the customer's mail is polled from Dovecot, our reply
leaves by SMTP (and is saved to Sent by IMAP APPEND), and the customer's answer to it, polled
from Dovecot again, joins the same conversation."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from conversations.incoming.polling import poll_inbox
from conversations.models import Conversation, DeliveryStatus
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from inboxes.models import Security
from tests import factories

pytestmark = pytest.mark.django_db


def _customer_mail(subject: str, message_id: str, *, answering: EmailMessage | None = None) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Ann Customer <ann@example.test>"
    mail["To"] = "support@switchboard.test"
    mail["Subject"] = subject
    mail["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    mail["Message-ID"] = message_id
    if answering is not None:
        mail["In-Reply-To"] = answering["Message-ID"]
        mail["References"] = f"{answering['References']} {answering['Message-ID']}"
    mail.set_content("Thanks, the fire is out." if answering is not None else "My printer is on fire.")
    return bytes(mail)


@pytest.fixture
def mailbox_inbox(dovecot, mail_account, smtp_server_factory, settings, people):
    settings.MAIL_CA_FILE = str(dovecot.ca_file)
    server = smtp_server_factory(security="starttls", username="support", password="pw")
    inbox = factories.InboxFactory(
        address="support@switchboard.test", department=people.department_a,
        imap_host=dovecot.host, imap_port=dovecot.ports[Security.IMPLICIT_TLS], imap_security=Security.IMPLICIT_TLS,
        imap_username=mail_account.username, imap_secret=mail_account.password,
        import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        save_to_sent=True, sent_folder="Sent", **server.inbox_settings())
    return inbox, server


def test_the_customers_answer_threads_back_through_the_mailbox(mailbox_inbox, mail_account, dovecot):
    inbox, server = mailbox_inbox
    mail_account.append([_customer_mail("Printer on fire", "<q1@example.test>")])
    with dovecot.client(mail_account.username, mail_account.password) as imap:
        imap.create("Sent")  # as on real servers, the folder exists
    poll_inbox(inbox.pk)
    conversation = Conversation.objects.get(inbox=inbox)

    reply = queue_reply(conversation, text="Use the extinguisher.")
    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT
    [received] = server.wait_for(1)
    ours = received.message
    assert ours["In-Reply-To"] == "<q1@example.test>"

    mail_account.append([_customer_mail("Re: Printer on fire", "<a1@example.test>", answering=ours)])
    poll_inbox(inbox.pk)

    answer = conversation.messages.get(message_id="a1@example.test")
    assert answer.conversation_id == conversation.pk
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    reply.refresh_from_db()
    assert reply.delivery_history[-1]["detail"] == "saved to Sent"
    with dovecot.client(mail_account.username, mail_account.password) as imap:
        imap.select('"Sent"', readonly=True)
        _, found = imap.search(None, "HEADER", "Message-ID", reply.message_id)
        assert len(found[0].split()) == 1


def test_a_failed_save_to_sent_is_recorded_and_the_reply_stays_sent(mailbox_inbox):
    inbox, server = mailbox_inbox
    type(inbox).objects.filter(pk=inbox.pk).update(sent_folder="No such folder")
    conversation = factories.ConversationFactory(inbox=inbox)
    factories.MessageFactory(conversation=conversation)

    reply = queue_reply(conversation, text="Hello")
    delivery.deliver_message(reply.pk)

    reply.refresh_from_db()
    assert reply.delivery_status == DeliveryStatus.SENT
    assert reply.delivery_history[-1]["detail"].startswith("could not save to No such folder")
    assert len(server.received) == 1
