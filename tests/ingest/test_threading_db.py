"""Threading as stored: replies join, strangers start their own, closed conversations reopen or
follow up, and agents hear about it after commit."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from conversations.incoming.ingest import ingest_email
from conversations.incoming.threading import subject_token
from conversations.models import Conversation, ConversationStatus, Direction
from conversations.tokens import make_message_id
from tests import factories
from tests.ingest.conftest import compose


def our_reply(conversation, *, to: str, message_id: str | None = None):
    """An answer we sent in a conversation, as the outgoing helper stores it."""
    message_id = message_id or make_message_id(conversation.public_id, "switchboard.test")
    return factories.MessageFactory(
        conversation=conversation, direction=Direction.OUT, message_id=message_id,
        from_address=conversation.inbox.address, to=[{"name": "", "address": to}],
    )


def test_a_reply_to_our_answer_joins_the_conversation(inbox):
    first = ingest_email(inbox, compose()).message
    ours = our_reply(first.conversation, to="ada@example.com")

    reply = ingest_email(inbox, compose(message_id="q2@example.com", in_reply_to=ours.message_id))

    assert reply.message.conversation == first.conversation
    assert reply.conversation_created is False


def test_a_colleagues_reply_to_our_answer_joins_flagged_as_a_new_participant(inbox):
    first = ingest_email(inbox, compose(sender="ada@example.com", message_id="ada-1@example.com")).message
    ours = our_reply(first.conversation, to="ada@example.com")
    colleague = compose(sender="Carol <carol@example.com>", message_id="carol-1@example.com",
                        in_reply_to=ours.message_id, subject="Re: Question")

    reply = ingest_email(inbox, colleague).message

    reply.refresh_from_db()
    assert reply.conversation_id == first.conversation_id
    assert reply.new_participant is True
    assert (reply.direction, reply.author) == (Direction.IN, None)
    assert first.new_participant is False
    assert reply.conversation.contact.address == "ada@example.com"  # the customer is still Ada


def test_the_customer_from_a_second_address_joins_flagged(inbox):
    first = ingest_email(inbox, compose(sender="ada@example.com", message_id="ada-1@example.com")).message
    ours = our_reply(first.conversation, to="ada@example.com")

    reply = ingest_email(inbox, compose(sender="Ada <ada@home.example>", message_id="ada-2@home.example",
                                        in_reply_to=ours.message_id)).message

    reply.refresh_from_db()
    assert reply.conversation_id == first.conversation_id
    assert reply.new_participant is True


def test_a_reply_from_someone_on_the_thread_is_no_new_participant(inbox):
    first = ingest_email(inbox, compose(sender="ada@example.com", message_id="ada-1@example.com",
                                        extra="Cc: carol@example.com\r\n")).message

    reply = ingest_email(inbox, compose(sender="carol@example.com", message_id="carol-1@example.com",
                                        in_reply_to="ada-1@example.com")).message

    assert reply.conversation_id == first.conversation_id
    assert reply.new_participant is False


def test_an_agents_address_on_incoming_mail_earns_nothing(inbox, people):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")
    ours = our_reply(conversation, to="ada@example.com")
    people.agent_a.user.email = "alice@switchboard.test"
    people.agent_a.user.save()

    reply = ingest_email(inbox, compose(sender="Alice <alice@switchboard.test>", message_id="forged@x",
                                        in_reply_to=ours.message_id)).message

    reply.refresh_from_db()
    assert reply.conversation == conversation
    assert (reply.direction, reply.author, reply.new_participant) == (Direction.IN, None, True)


def test_a_stranger_with_only_a_subject_token_starts_a_conversation_of_their_own(inbox):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")

    reply = ingest_email(inbox, compose(sender="eve@example.com",
                                        subject=f"Re: Your order {subject_token(conversation.public_id)}"))

    assert reply.conversation_created
    assert reply.message.conversation != conversation
    assert reply.message.new_participant is False


def test_our_signed_message_id_threads_even_when_not_stored_here(inbox):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")
    never_stored = make_message_id(conversation.public_id, "switchboard.test")

    reply = ingest_email(inbox, compose(in_reply_to=never_stored))

    assert reply.message.conversation == conversation


def test_a_forged_token_threads_nowhere(inbox):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")
    forged = make_message_id(conversation.public_id, "switchboard.test").replace("sb.", "sb.0", 1)

    reply = ingest_email(inbox, compose(in_reply_to=forged))

    assert reply.conversation_created


def test_a_token_signed_with_another_key_threads_nowhere(inbox, settings):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")
    ours = settings.SECRET_KEY
    settings.SECRET_KEY = "another installation's key"
    foreign = make_message_id(conversation.public_id, "switchboard.test")
    settings.SECRET_KEY = ours

    reply = ingest_email(inbox, compose(sender="eve@example.com", in_reply_to=foreign))

    assert reply.conversation_created


def test_a_subject_token_threads_a_message_without_references(inbox):
    conversation = factories.ConversationFactory(inbox=inbox, contact__address="ada@example.com")

    reply = ingest_email(inbox, compose(subject=f"Re: Your order {subject_token(conversation.public_id)}"))

    assert reply.message.conversation == conversation


def test_references_of_another_inbox_do_not_thread(inbox):
    elsewhere = ingest_email(factories.InboxFactory(), compose(message_id="first@x")).message

    reply = ingest_email(inbox, compose(message_id="second@x", in_reply_to="first@x"))

    assert reply.conversation_created
    assert reply.message.conversation != elsewhere.conversation


def test_a_reply_to_a_recently_closed_conversation_reopens_it(inbox, agent_events, django_capture_on_commit_callbacks):
    first = ingest_email(inbox, compose()).message
    Conversation.objects.filter(pk=first.conversation_id).update(
        status=ConversationStatus.CLOSED, closed_at=timezone.now() - timedelta(days=2)
    )

    with django_capture_on_commit_callbacks(execute=True):
        reply = ingest_email(inbox, compose(message_id="q2@example.com", in_reply_to="q1@example.com"))

    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert reply.reopened
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.closed_at is None
    agent_events.mark()
    assert [t for t, _ in agent_events.receive(3)] == ["conversation.updated", "message.created", "test.mark"]


def test_a_reply_long_after_closing_starts_a_linked_conversation(inbox, settings):
    settings.REOPEN_WINDOW_DAYS = 7
    first = ingest_email(inbox, compose()).message
    Conversation.objects.filter(pk=first.conversation_id).update(
        status=ConversationStatus.CLOSED, closed_at=timezone.now() - timedelta(days=8)
    )

    reply = ingest_email(inbox, compose(message_id="q2@example.com", in_reply_to="q1@example.com"))

    assert reply.conversation_created
    assert reply.message.conversation.previous_id == first.conversation_id
    assert reply.message.conversation.status == ConversationStatus.OPEN
    assert Conversation.objects.get(pk=first.conversation_id).status == ConversationStatus.CLOSED


def test_agents_hear_of_a_new_conversation_only_after_commit(inbox, agent_events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = ingest_email(inbox, compose())
    agent_events.mark()  # heard before anything ingest sends, if it sent nothing before commit

    for callback in callbacks:
        callback()

    ids = {"conversation": str(result.message.conversation.public_id)}
    assert agent_events.receive(3) == [
        ("test.mark", {}),
        ("conversation.created", ids),
        ("message.created", {**ids, "message": str(result.message.public_id)}),
    ]


def test_imported_history_is_archived_and_silent(inbox, agent_events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest_email(inbox, compose(), archive=True)

    conversation = result.message.conversation
    assert result.message.archived
    assert conversation.archived
    assert conversation.status == ConversationStatus.CLOSED
    assert result.message.created_at.year == 2025  # placed at its Date, not at import time
    agent_events.mark()
    assert agent_events.receive(1) == [("test.mark", {})]


def test_a_reply_moves_its_conversation_to_the_top(inbox):
    first = ingest_email(inbox, compose()).message
    Conversation.objects.filter(pk=first.conversation_id).update(last_message_at=timezone.now() - timedelta(hours=5))

    reply = ingest_email(inbox, compose(message_id="q2@example.com", in_reply_to="q1@example.com")).message

    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert conversation.last_message_at == reply.created_at


def test_a_reply_to_a_shared_message_id_joins_the_message_stored_under_it(inbox):
    original = ingest_email(inbox, compose(message_id="same@x", body="First")).message
    for _ in range(3):  # different messages reusing the id, flagged as conflicts
        ingest_email(inbox, compose(message_id="same@x", body=f"Other {_}", subject=f"Other {_}"))

    reply = ingest_email(inbox, compose(message_id="reply@x", in_reply_to="same@x")).message

    assert reply.conversation_id == original.conversation_id
