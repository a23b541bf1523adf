"""Mail from our own inboxes, or with our own Message-IDs, is ours: stored, flagged, never a customer's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.incoming.ingest import ingest_email
from conversations.models import Conversation, ConversationStatus, Direction
from conversations.signals import conversation_started
from conversations.tokens import make_message_id
from tests import factories
from tests.ingest.conftest import compose


@pytest.fixture
def started():
    """The conversations ingest told features (acknowledgements, routing) about."""
    heard = []

    def hear(sender, message_id, **kwargs):
        heard.append(message_id)

    conversation_started.connect(hear, dispatch_uid="tests.own_mail")
    yield heard
    conversation_started.disconnect(dispatch_uid="tests.own_mail")


def test_mail_from_another_of_our_inboxes_is_stored_closed_and_flagged(inbox, started):
    factories.InboxFactory(address="sales@switchboard.test")
    raw = compose(sender="Sales <sales@switchboard.test>", message_id="s1@switchboard.test")

    result = ingest_email(inbox, raw)

    message = result.message
    message.refresh_from_db()
    conversation = message.conversation
    assert message.is_automatic
    assert message.automatic_reason == "Sent from our own inbox sales@switchboard.test"
    assert conversation.status == ConversationStatus.CLOSED
    assert started == []


def test_mail_we_wrote_from_this_inbox_to_a_customer_names_the_customer(inbox, started):
    raw = compose(sender="support@switchboard.test", message_id="o1@x").replace(
        b"To: support@switchboard.test", b"To: Ada <ada@example.com>")

    conversation = ingest_email(inbox, raw).message.conversation

    assert conversation.contact.address == "ada@example.com"
    assert conversation.status == ConversationStatus.CLOSED
    assert started == []


def test_mail_carrying_our_signed_message_id_is_ours(inbox, started):
    elsewhere = factories.ConversationFactory(inbox=factories.InboxFactory())
    ours = make_message_id(elsewhere.public_id, "switchboard.test")

    message = ingest_email(inbox, compose(sender="relay@example.com", message_id=ours)).message

    assert message.is_automatic
    assert message.automatic_reason == "Carries one of our own Message-IDs"
    assert message.conversation.status == ConversationStatus.CLOSED
    assert started == []


def test_mail_with_our_message_id_domain_is_ours(inbox, settings, started):
    settings.SWITCHBOARD_MESSAGE_ID_DOMAIN = "mail.switchboard.test"

    message = ingest_email(inbox, compose(sender="relay@example.com", message_id="x1@Mail.Switchboard.test")).message

    assert message.automatic_reason == "Carries a Message-ID of our own domain mail.switchboard.test"
    assert message.conversation.status == ConversationStatus.CLOSED


def test_a_colleague_at_the_inboxs_domain_is_a_customer_like_any_other(inbox, started):
    result = ingest_email(inbox, compose(sender="carol@switchboard.test", message_id="c1@switchboard.test"))

    assert result.message.is_automatic is False
    assert result.message.conversation.status == ConversationStatus.OPEN
    assert started == [result.message.pk]


def test_our_own_mail_about_a_known_conversation_joins_it_without_reopening_it(inbox, started):
    first = ingest_email(inbox, compose(sender="ada@example.com", message_id="ada-1@example.com")).message
    Conversation.objects.filter(pk=first.conversation_id).update(
        status=ConversationStatus.CLOSED, closed_at=timezone.now() - timedelta(days=1))
    raw = compose(sender="support@switchboard.test", message_id="o2@x", in_reply_to="ada-1@example.com")

    result = ingest_email(inbox, raw)

    assert result.message.conversation_id == first.conversation_id
    assert (result.message.direction, result.message.author, result.message.is_automatic) == (Direction.IN, None, True)
    assert result.reopened is False
    assert Conversation.objects.get(pk=first.conversation_id).status == ConversationStatus.CLOSED
