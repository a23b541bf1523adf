"""The hot-path row helpers read and write exactly what the ORM would, on either database."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import Contact, Conversation, ConversationStatus
from conversations.rows import insert_row, lock_row, update_row
from tests import factories


@pytest.mark.django_db
def test_insert_row_stores_what_save_would():
    inbox = factories.InboxFactory()
    contact = Contact(address="ada@example.com", name="Ada")
    insert_row(contact)
    when = timezone.now() - dt.timedelta(days=3)
    conversation = Conversation(inbox=inbox, department_id=inbox.department_id, contact=contact, subject="Hi",
                                created_at=when, last_message_at=when)
    insert_row(conversation)

    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.public_id == conversation.public_id
    assert stored.contact.address == "ada@example.com"
    assert stored.created_at == when
    assert stored.updated_at is not None  # auto_now, as save() sets it
    assert Contact.objects.get(pk=contact.pk).created_at is not None  # auto_now_add


@pytest.mark.django_db
def test_lock_row_loads_typed_values_and_update_row_is_conditional():
    closed = timezone.now() - dt.timedelta(hours=5)
    conversation = factories.ConversationFactory(status=ConversationStatus.CLOSED, closed_at=closed)

    row = lock_row(Conversation, conversation.pk, ("public_id", "status", "closed_at", "last_message_at"))

    assert row.public_id == conversation.public_id  # a UUID, not its text
    assert row.closed_at == closed
    assert row.closed_at.tzinfo is not None
    assert row.status == ConversationStatus.CLOSED
    assert update_row(Conversation, conversation.pk, where='"status" = %s', where_params=("open",),
                      status=ConversationStatus.OPEN) == 0
    assert update_row(Conversation, conversation.pk, where='"closed_at" = %s', where_params=(closed,),
                      status=ConversationStatus.OPEN, closed_at=None) == 1
    conversation.refresh_from_db()
    assert (conversation.status, conversation.closed_at) == (ConversationStatus.OPEN, None)
    with pytest.raises(Conversation.DoesNotExist):
        lock_row(Conversation, conversation.pk + 1000, ("status",))
