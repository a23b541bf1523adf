"""ingest_batch: a batch shares its lookups, yet every message is stored as if it came alone."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.ingest import IncomingEmail, ingest_batch
from conversations.models import Conversation, ConversationStatus, Message
from tests.ingest.conftest import compose


def test_a_batch_dedups_and_threads_against_its_own_earlier_messages(inbox):
    first = compose(message_id="q1@example.com")
    items = [
        IncomingEmail(first, imap_uid=1),
        IncomingEmail(b"Received: from mx2\r\n" + first, imap_uid=2),
        IncomingEmail(compose(message_id="q2@example.com", in_reply_to="q1@example.com"), imap_uid=3),
        IncomingEmail(compose(sender="bob@example.com", message_id="b1@example.com"), imap_uid=4),
    ]

    results = [result for _item, result in ingest_batch(inbox, items)]

    assert [r.created for r in results] == [True, False, True, True]
    assert results[1].message == results[0].message
    assert results[2].message.conversation == results[0].message.conversation
    assert results[3].conversation_created
    assert Message.objects.count() == 3
    assert Conversation.objects.count() == 2


def test_a_bad_message_in_a_batch_is_quarantined_and_the_rest_stored(inbox, settings):
    settings.MAX_MESSAGE_BYTES = 2_000
    items = [IncomingEmail(compose(message_id="a@x"), imap_uid=1),
             IncomingEmail(compose(message_id="big@x", body="x" * 5_000), imap_uid=2),
             IncomingEmail(compose(message_id="c@x"), imap_uid=3)]

    results = [result for _item, result in ingest_batch(inbox, items)]

    assert [r.created for r in results] == [True, False, True]
    assert results[1].quarantined is not None
    assert "over the limit" in results[1].quarantined.error


def test_a_conversation_closed_during_the_batch_is_reopened_by_a_reply(inbox):
    items = [IncomingEmail(compose(message_id="q1@example.com")),
             IncomingEmail(compose(message_id="q2@example.com", in_reply_to="q1@example.com"))]
    batch = ingest_batch(inbox, items)
    _item, first = next(batch)
    # An agent closes it after the batch loaded its lookups: the reply must see that.
    Conversation.objects.filter(pk=first.message.conversation_id).update(
        status=ConversationStatus.CLOSED, closed_at=timezone.now())

    _item, reply = next(batch)

    assert reply.reopened
    assert reply.message.conversation_id == first.message.conversation_id
    conversation = Conversation.objects.get(pk=first.message.conversation_id)
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.closed_at is None


def test_lookups_cost_one_query_each_per_batch_not_per_message(inbox):
    items = [IncomingEmail(compose(sender=f"c{n}@example.com", message_id=f"m{n}@x",
                                   in_reply_to=f"m{n - 1}@x" if n % 2 else None)) for n in range(20)]

    with CaptureQueriesContext(connection) as queries:
        results = [result for _item, result in ingest_batch(inbox, items)]

    assert all(r.created for r in results)
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # Our addresses, stored copies, referenced messages, contacts; none per message.
    assert len(selects) == 4, selects
