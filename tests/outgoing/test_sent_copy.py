"""Save to Sent: a failed APPEND to the real Dovecot is tried again with a backoff, never by sending
the reply again, and the message says whether its copy is stored."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import DeliveryStatus, Direction, SentCopyStatus
from conversations.outgoing import delivery, sent_copy
from conversations.outgoing.replies import queue_reply
from inboxes.models import Security
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def reply_to_save(dovecot, mail_account, smtp_server, settings, people):
    """A reply of an inbox that saves to a Sent folder Dovecot does not have yet."""
    settings.MAIL_CA_FILE = str(dovecot.ca_file)
    inbox = factories.InboxFactory(
        address="support@switchboard.test", department=people.department_a,
        imap_host=dovecot.host, imap_port=dovecot.ports[Security.IMPLICIT_TLS], imap_security=Security.IMPLICIT_TLS,
        imap_username=mail_account.username, imap_secret=mail_account.password,
        save_to_sent=True, sent_folder="Sent", **smtp_server.inbox_settings())
    conversation = factories.ConversationFactory(inbox=inbox)
    factories.MessageFactory(conversation=conversation, direction=Direction.IN)
    return queue_reply(conversation, text="Keep a copy")


def _copies(dovecot, account, message_id: str) -> list[bytes]:
    with dovecot.client(account.username, account.password) as imap:
        typ, _ = imap.select('"Sent"', readonly=True)
        if typ != "OK":
            return []
        _, found = imap.search(None, "HEADER", "Message-ID", message_id)
        return [imap.fetch(number, "(BODY.PEEK[])")[1][0][1] for number in found[0].split()]


def _later(minutes: int) -> dt.datetime:
    return timezone.now() + dt.timedelta(minutes=minutes)


def test_a_failed_append_is_tried_again_until_it_works_and_the_reply_is_sent_once(
        reply_to_save, smtp_server, dovecot, mail_account):
    reply = reply_to_save

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT

    reply.refresh_from_db()
    assert (reply.sent_copy_status, reply.sent_copy_attempts) == (SentCopyStatus.PENDING, 1)
    assert reply.sent_copy_next_attempt_at > timezone.now()
    assert "could not save to Sent" in reply.sent_copy_error
    assert "will try again at" in reply.delivery_history[-1]["detail"]
    assert sent_copy.retry_sent_copies() == []  # not before its time

    assert sent_copy.retry_sent_copies(now=_later(5)) == [reply.pk]  # the folder is still missing
    reply.refresh_from_db()
    assert (reply.sent_copy_status, reply.sent_copy_attempts) == (SentCopyStatus.PENDING, 2)

    with dovecot.client(mail_account.username, mail_account.password) as imap:
        imap.create("Sent")  # the manager fixes it
    assert sent_copy.retry_sent_copies(now=_later(60)) == [reply.pk]

    reply.refresh_from_db()
    assert (reply.sent_copy_status, reply.sent_copy_attempts, reply.sent_copy_error) == (
        SentCopyStatus.STORED, 3, "")
    assert reply.sent_copy_next_attempt_at is None
    assert reply.delivery_status == DeliveryStatus.SENT
    assert reply.delivery_history[-1]["detail"] == "saved to Sent"
    with reply.raw.open("rb") as handle:
        assert _copies(dovecot, mail_account, reply.message_id) == [handle.read()]
    assert len(smtp_server.received) == 1
    assert sent_copy.retry_sent_copies(now=_later(600)) == []


def test_a_copy_that_never_saves_is_marked_failed_after_the_last_attempt(reply_to_save, smtp_server, settings):
    settings.SENT_COPY_MAX_ATTEMPTS = 2
    reply = reply_to_save
    delivery.deliver_message(reply.pk)

    sent_copy.retry_sent_copies(now=_later(5))

    reply.refresh_from_db()
    assert (reply.sent_copy_status, reply.sent_copy_attempts) == (SentCopyStatus.FAILED, 2)
    assert reply.delivery_history[-1]["detail"].endswith("gave up after 2 attempts")
    assert sent_copy.retry_sent_copies(now=_later(600)) == []
    assert len(smtp_server.received) == 1


def test_an_inbox_that_keeps_no_copy_says_so(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    reply = queue_reply(conversation, text="No copy")

    delivery.deliver_message(reply.pk)

    reply.refresh_from_db()
    assert (reply.delivery_status, reply.sent_copy_status) == (DeliveryStatus.SENT, SentCopyStatus.NONE)
