"""ingest_batch: a batch shares its lookups, yet every message is stored as if it came alone."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.incoming.ingest import IncomingEmail, ParsedAhead, ingest_batch
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


def test_a_batch_parsed_while_another_commits_is_stored_as_if_parsed_at_its_turn(inbox, settings):
    settings.MAX_MESSAGE_BYTES = 2_000
    first = [IncomingEmail(compose(message_id=f"a{n}@x"), imap_uid=n) for n in (1, 2)]
    second = ParsedAhead(inbox, [
        IncomingEmail(compose(message_id="b1@x", in_reply_to="a1@x"), imap_uid=3),
        IncomingEmail(compose(message_id="big@x", body="x" * 5_000), imap_uid=4),
    ])

    assert [r.created for _i, r in ingest_batch(inbox, first, meanwhile=second.parse_one)] == [True, True]
    assert not second.parse_one()  # one parsed per message committed: nothing is left
    results = [result for _item, result in ingest_batch(inbox, second)]

    assert results[0].created
    assert results[0].message.conversation == Message.objects.get(message_id="a1@x").conversation
    assert results[1].quarantined is not None  # its error waited for its turn
    assert "over the limit" in results[1].quarantined.error
    assert Message.objects.count() == 3


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
    # Replies to mail stored elsewhere: looked up, not found, so no conversation row to lock.
    items = [IncomingEmail(compose(sender=f"c{n}@example.com", message_id=f"m{n}@x",
                                   in_reply_to=f"elsewhere{n - 1}@x" if n % 2 else None)) for n in range(20)]

    with CaptureQueriesContext(connection) as queries:
        results = [result for _item, result in ingest_batch(inbox, items)]

    assert all(r.created for r in results)
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # Our addresses, stored copies, referenced messages, contacts, and on PostgreSQL the keys the
    # batch's rows will have (rows.ReservedIds); none per message.
    assert len(selects) == (5 if connection.vendor == "postgresql" else 4), selects


def _stored_files(media_root) -> set[str]:
    return {p.relative_to(media_root).as_posix() for p in media_root.rglob("*") if p.is_file()}


def _named_by_rows() -> set[str]:
    from conversations.models import Attachment, QuarantinedMessage

    return ({m.raw.name for m in Message.objects.all()} | {a.file.name for a in Attachment.objects.all()}
            | {q.raw.name for q in QuarantinedMessage.objects.all()})


def test_every_file_a_batch_leaves_is_named_by_a_row(inbox, media_root, settings):
    from tests.ingest.conftest import mail

    settings.MAX_MESSAGE_BYTES = 20_000
    list(ingest_batch(inbox, [IncomingEmail(compose(message_id="before@x"), imap_uid=1)]))
    with_attachments = mail("alternative_with_attachment.eml")
    items = [
        IncomingEmail(compose(message_id="before@x"), imap_uid=2),  # stored before the batch
        IncomingEmail(with_attachments, imap_uid=3),
        IncomingEmail(b"Received: from mx2\r\n" + with_attachments, imap_uid=4),  # a copy within the batch
        IncomingEmail(compose(message_id="big@x", body="x" * 30_000), imap_uid=5),  # quarantined
        IncomingEmail(compose(message_id="new@x"), imap_uid=6),
    ]

    results = [result for _item, result in ingest_batch(inbox, items)]

    assert [r.created for r in results] == [False, True, False, False, True]
    assert results[3].quarantined is not None
    assert Message.objects.get(message_id=results[1].message.message_id).attachments.count() == 2
    assert _stored_files(media_root) == _named_by_rows()


def test_a_batch_abandoned_halfway_leaves_no_files_of_the_messages_it_did_not_store(inbox, media_root):
    items = [IncomingEmail(compose(message_id=f"m{i}@x"), imap_uid=i) for i in range(1, 6)]

    batch = ingest_batch(inbox, items)
    next(batch)
    next(batch)
    batch.close()  # the caller stopped (its time budget, an error of its own)

    assert Message.objects.count() == 2
    assert _stored_files(media_root) == _named_by_rows()
    assert len(_named_by_rows()) == 2


@pytest.mark.django_db(transaction=True)
def test_a_committed_batch_stores_every_kind_of_row_and_tells_agents_once(inbox, agent_events):
    # Committed for real (on PostgreSQL each message's statements and COMMIT go out pipelined).
    from conversations.models import Attachment, Contact
    from tests.ingest.conftest import mail

    Contact.objects.create(address="carol@example.com")  # known, without a name yet
    with_attachment = mail("alternative_with_attachment.eml")
    items = [
        IncomingEmail(compose(message_id="q1@example.com"), imap_uid=1),
        IncomingEmail(with_attachment, imap_uid=2),
        IncomingEmail(b"Received: from mx2\r\n" + with_attachment, imap_uid=3),  # the same message again
        IncomingEmail(compose(message_id="q2@example.com", in_reply_to="q1@example.com"), imap_uid=4),
        IncomingEmail(compose(sender="Carol <carol@example.com>", message_id="c1@example.com"), imap_uid=5),
    ]

    results = [result for _item, result in ingest_batch(inbox, items)]

    assert [r.created for r in results] == [True, True, False, True, True]
    assert results[3].message.conversation_id == results[0].message.conversation_id
    stored = Message.objects.get(pk=results[1].message.pk)
    assert stored.from_address == "jose.diaz@example.org"
    assert [a.message_id for a in Attachment.objects.all()] == [stored.pk] * stored.attachments.count()
    assert stored.attachments.count() >= 1
    assert Contact.objects.get(address="carol@example.com").name == "Carol"
    conversation = Conversation.objects.get(pk=results[0].message.conversation_id)
    assert conversation.last_message_at == results[3].message.created_at
    assert Message.objects.count() == 4
    assert Conversation.objects.count() == 3
    agent_events.mark()
    heard = agent_events.receive(8)
    assert [kind for kind, _payload in heard] == [
        "conversation.created", "message.created", "conversation.created", "message.created",
        "message.created", "conversation.created", "message.created", "test.mark"]


def _refuse_subject(subject: str) -> tuple[str, str]:
    """SQL for a trigger that refuses to store a message with this subject, as a unique
    constraint would (a real failure inside the database, not a patched function); and its removal."""
    if connection.vendor == "postgresql":
        return (
            "CREATE FUNCTION refuse_subject() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.subject = '{subject}' THEN RAISE EXCEPTION 'refused' USING ERRCODE = 'unique_violation'; "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER refuse_subject BEFORE INSERT ON conversations_message "
            "FOR EACH ROW EXECUTE FUNCTION refuse_subject()",
            "DROP TRIGGER refuse_subject ON conversations_message; DROP FUNCTION refuse_subject()",
        )
    return (
        "CREATE TRIGGER refuse_subject BEFORE INSERT ON conversations_message "
        f"WHEN NEW.subject = '{subject}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "DROP TRIGGER refuse_subject",
    )


@pytest.mark.django_db(transaction=True)
def test_a_message_the_database_refuses_mid_batch_costs_no_other_message(inbox, agent_events, media_root):
    # On PostgreSQL the messages after it were already sent, decided as if it had been stored
    # (the reply threaded into its conversation): they must be stored again, each once.
    create, drop = _refuse_subject("Boom")
    with connection.cursor() as cursor:
        cursor.execute(create)
    try:
        items = [
            IncomingEmail(compose(message_id="a1@x"), imap_uid=1),
            IncomingEmail(compose(sender="bo@example.com", subject="Boom", message_id="boom@x"), imap_uid=2),
            IncomingEmail(compose(sender="bo@example.com", message_id="r1@x", in_reply_to="boom@x"), imap_uid=3),
            IncomingEmail(b"Received: from mx2\r\n" + compose(message_id="a1@x"), imap_uid=4),
            IncomingEmail(compose(message_id="c1@x", in_reply_to="a1@x"), imap_uid=5),
            IncomingEmail(compose(sender="di@example.com", message_id="d1@x"), imap_uid=6),
        ]
        results = [(item.imap_uid, result) for item, result in ingest_batch(inbox, items)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(drop)

    assert [uid for uid, _result in results] == [1, 2, 3, 4, 5, 6]  # each once, in order
    outcome = [("quarantined" if r.quarantined else "new" if r.created else "duplicate") for _uid, r in results]
    assert outcome == ["new", "quarantined", "new", "duplicate", "new", "new"]
    assert "conflicted" in results[1][1].quarantined.error
    reply = Message.objects.get(message_id="r1@x")
    assert results[2][1].conversation_created  # what it answered was never stored: a conversation of its own
    assert reply.conversation.messages.count() == 1
    assert Message.objects.get(message_id="c1@x").conversation == Message.objects.get(message_id="a1@x").conversation
    assert Message.objects.count() == 4
    assert Conversation.objects.count() == 3
    assert _stored_files(media_root) == _named_by_rows()
    agent_events.mark()
    heard = agent_events.receive(8)
    assert [kind for kind, _payload in heard] == [
        "conversation.created", "message.created",  # a1
        "conversation.created", "message.created",  # r1
        "message.created",  # c1
        "conversation.created", "message.created",  # d1
        "test.mark"]


@pytest.mark.django_db(transaction=True)
def test_a_message_for_the_quarantine_between_committed_ones_takes_its_turn(inbox, settings, media_root):
    # On PostgreSQL what is under way settles first; the quarantine's own transaction is then
    # not part of the pipeline, and the messages after it are pipelined again.
    settings.MAX_MESSAGE_BYTES = 2_000
    items = [IncomingEmail(compose(message_id="a@x"), imap_uid=1),
             IncomingEmail(compose(message_id="big@x", body="x" * 5_000), imap_uid=2),
             IncomingEmail(compose(message_id="c@x", in_reply_to="a@x"), imap_uid=3),
             IncomingEmail(compose(sender="dee@example.com", message_id="d@x"), imap_uid=4)]

    results = [(item.imap_uid, result) for item, result in ingest_batch(inbox, items)]

    assert [uid for uid, _result in results] == [1, 2, 3, 4]
    assert [r.created for _uid, r in results] == [True, False, True, True]
    assert "over the limit" in results[1][1].quarantined.error
    assert results[2][1].message.conversation_id == results[0][1].message.conversation_id
    assert Message.objects.count() == 3
    assert Conversation.objects.count() == 2
    assert _stored_files(media_root) == _named_by_rows()
    assert connection.get_autocommit()
