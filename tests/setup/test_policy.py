"""The organisation policy holds for every inbox that sets nothing of its own: recipients and the hourly cap."""

from __future__ import annotations

import pytest

from conversations.models import Contact, DeliveryStatus, Direction
from conversations.outgoing import delivery
from conversations.outgoing.replies import ReplyValidationError, queue_reply
from inboxes.policy import OrganisationPolicy
from tests import factories


@pytest.fixture
def thread(people, smtp_server):
    def make(**fields):
        inbox = factories.InboxFactory(department=people.department_a, **{**smtp_server.inbox_settings(), **fields})
        contact = Contact.objects.filter(address="ann@example.test").first() or factories.ContactFactory(
            address="ann@example.test")
        conversation = factories.ConversationFactory(inbox=inbox, contact=contact)
        factories.MessageFactory(conversation=conversation, direction=Direction.IN, message_id="first@example.test")
        return conversation
    return make


def test_the_organisations_recipient_domains_refuse_other_recipients(thread):
    OrganisationPolicy.objects.create(allowed_recipient_domains="example.test")
    conversation = thread()
    with pytest.raises(ReplyValidationError) as error:
        queue_reply(conversation, text="Hi", cc=["leak@elsewhere.test"])
    assert error.value.address == "leak@elsewhere.test"
    assert queue_reply(conversation, text="Hi").delivery_status == DeliveryStatus.QUEUED


def test_an_inbox_with_its_own_domains_overrides_the_organisations(thread):
    OrganisationPolicy.objects.create(allowed_recipient_domains="example.test")
    conversation = thread(allowed_recipient_domains="example.test\nelsewhere.test")
    assert queue_reply(conversation, text="Hi", cc=["ok@elsewhere.test"]).delivery_status == DeliveryStatus.QUEUED


def test_the_organisations_hourly_cap_delays_replies_and_an_inbox_may_raise_it(thread, smtp_server):
    OrganisationPolicy.objects.create(max_sends_per_hour=1)
    conversation = thread()
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(2)]
    assert [delivery.deliver_message(m.pk).status for m in messages] == ["sent", "deferred"]
    assert len(smtp_server.received) == 1

    own = thread(address="sales@switchboard.test", max_sends_per_hour=5)
    messages = [queue_reply(own, text=f"reply {n}") for n in range(2)]
    assert [delivery.deliver_message(m.pk).status for m in messages] == ["sent", "sent"]
