"""Choosing a conversation, as a pure function over what the inbox already holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conversations.incoming.threading import (
    Action,
    KnownConversation,
    KnownMessage,
    choose_conversation,
    find_subject_token,
    subject_token,
    subject_token_range,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=14)


def conversation(contact: str = "ada@example.com", *, closed_days_ago: int | None = None, pk: int = 1):
    closed_at = NOW - timedelta(days=closed_days_ago) if closed_days_ago is not None else None
    return KnownConversation(
        id=pk, public_id=uuid.uuid4(), contact_address=contact, closed=closed_days_ago is not None,
        closed_at=closed_at, last_message_at=closed_at or NOW,
    )


OPEN = conversation()
OTHER = conversation("bob@example.com", pk=2)
RECENTLY_CLOSED = conversation(closed_days_ago=3, pk=3)
LONG_CLOSED = conversation(closed_days_ago=30, pk=4)
# Our mail to Ada (as seen without its recipients), a customer's message that had Carol in copy, our
# reply that went to Dave.
OUR_MAILING = KnownMessage(OPEN, frozenset())
ADAS_MESSAGE = KnownMessage(OPEN, frozenset({"ada@example.com", "carol@example.com", "support@switchboard.test"}))
OUR_REPLY_TO_DAVE = KnownMessage(OPEN, frozenset({"support@switchboard.test", "dave@example.com"}))


@pytest.mark.parametrize(
    ("case", "sender", "thread_ids", "known", "tokens", "subject", "action", "target", "previous", "new"),
    [
        ("nothing known", "ada@example.com", ["x@y"], {}, {}, None, Action.NEW, None, None, False),
        ("no references", "ada@example.com", [], {}, {}, None, Action.NEW, None, None, False),
        ("reply to our mail", "ada@example.com", ["ours@sb"], {"ours@sb": OUR_MAILING}, {}, None,
         Action.JOIN, OPEN, None, False),
        ("sender compared without case", "ADA@Example.com", ["ours@sb"], {"ours@sb": OUR_MAILING}, {}, None,
         Action.JOIN, OPEN, None, False),
        # Threads follow the headers, whoever sends: someone new joins, flagged.
        ("someone else answers our mail", "eve@example.com", ["ours@sb"], {"ours@sb": OUR_MAILING}, {}, None,
         Action.JOIN, OPEN, None, True),
        ("the customer from a second address", "ada@home.example", ["ours@sb"], {"ours@sb": OUR_MAILING}, {},
         None, Action.JOIN, OPEN, None, True),
        ("a colleague in copy answers the customer", "carol@example.com", ["ada-1@x"], {"ada-1@x": ADAS_MESSAGE},
         {}, None, Action.JOIN, OPEN, None, False),
        ("someone we wrote to answers", "dave@example.com", ["ours-2@sb"], {"ours-2@sb": OUR_REPLY_TO_DAVE}, {},
         None, Action.JOIN, OPEN, None, False),
        ("reply-all to our answer, found through the customer's message", "carol@example.com",
         ["ours@sb", "ada-1@x"], {"ours@sb": OUR_MAILING, "ada-1@x": ADAS_MESSAGE}, {}, None,
         Action.JOIN, OPEN, None, False),
        ("In-Reply-To wins over older references", "bob@example.com", ["b@x", "a@x"],
         {"b@x": KnownMessage(OTHER, frozenset()), "a@x": OUR_MAILING}, {}, None, Action.JOIN, OTHER, None, False),
        ("our token, message not stored here", "ada@example.com", ["sb.token@sb"], {}, {"sb.token@sb": OPEN},
         None, Action.JOIN, OPEN, None, False),
        ("our token, another sender", "eve@example.com", ["sb.token@sb"], {}, {"sb.token@sb": OPEN}, None,
         Action.JOIN, OPEN, None, True),
        ("stored message beats token", "bob@example.com", ["b@x", "sb.token@sb"],
         {"b@x": KnownMessage(OTHER, frozenset())}, {"sb.token@sb": OPEN}, None, Action.JOIN, OTHER, None, False),
        ("subject token", "ada@example.com", [], {}, {}, OPEN, Action.JOIN, OPEN, None, False),
        ("subject token from a stranger", "eve@example.com", [], {}, {}, OPEN, Action.NEW, None, None, False),
        ("closed, inside the window", "ada@example.com", ["c@x"], {"c@x": KnownMessage(RECENTLY_CLOSED,
         frozenset())}, {}, None, Action.REOPEN, RECENTLY_CLOSED, None, False),
        ("closed, inside the window, someone new", "eve@example.com", ["c@x"], {"c@x": KnownMessage(
         RECENTLY_CLOSED, frozenset())}, {}, None, Action.REOPEN, RECENTLY_CLOSED, None, True),
        ("closed, past the window", "ada@example.com", ["c@x"], {"c@x": KnownMessage(LONG_CLOSED, frozenset())},
         {}, None, Action.NEW, None, LONG_CLOSED, False),
        ("closed, past the window, by token", "ada@example.com", ["sb.t@sb"], {}, {"sb.t@sb": LONG_CLOSED}, None,
         Action.NEW, None, LONG_CLOSED, False),
    ],
)
def test_choose_conversation(case, sender, thread_ids, known, tokens, subject, action, target, previous, new):
    choice = choose_conversation(
        sender=sender, thread_ids=thread_ids, known_messages=known, token_conversations=tokens,
        subject_conversation=subject, now=NOW, reopen_window=WINDOW,
    )

    assert (choice.action, choice.conversation, choice.previous) == (action, target, previous), case
    assert choice.new_participant is new, case
    assert choice.reason


def test_imported_history_joins_a_closed_conversation_without_reopening_it():
    choice = choose_conversation(
        sender="ada@example.com", thread_ids=["c@x"], known_messages={"c@x": KnownMessage(LONG_CLOSED, frozenset())},
        token_conversations={}, subject_conversation=None, now=NOW, reopen_window=WINDOW, archive=True,
    )

    assert choice.action == Action.JOIN
    assert choice.conversation == LONG_CLOSED


def test_subject_tokens_round_trip():
    public_id = uuid.UUID("3f2a9c01-b7de-4c4f-9a7e-0123456789ab")

    token = subject_token(public_id)

    assert token == "[#3f2a9c01b7de]"
    assert find_subject_token(f"Re: Your order {token.upper()}") == "3f2a9c01b7de"
    low, high = subject_token_range("3f2a9c01b7de")
    assert low <= public_id <= high
    assert find_subject_token("Re: [#123] too short") is None
