"""An empty Message-ID ("<>") is a missing one, in the message's own header and in its references."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from inboxes.mailformat.headers import message_ids
from inboxes.mailformat.parsing import parse_email


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<>", []),
        ("<> <a@example.com>", ["a@example.com"]),
        ("<@>", []),
        ("<<>>", []),
        ("< >", []),
        ("<a@example.com> <b@example.com>", ["a@example.com", "b@example.com"]),
        ("a@example.com", ["a@example.com"]),
    ],
)
def test_message_id_lists_skip_empty_ids(value, expected):
    assert message_ids(value) == expected


@pytest.mark.parametrize("value", ["<>", "<@>", " <> "])
def test_an_empty_message_id_is_a_missing_one(value):
    parsed = parse_email(f"From: a@example.com\r\nMessage-ID:{value}\r\nIn-Reply-To: <>\r\n\r\nhi".encode())

    assert parsed.message_id is None
    assert parsed.in_reply_to == []
    assert "The Message-ID header is not a valid id." in parsed.problems


def test_two_messages_with_an_empty_message_id_are_two_messages(inbox):
    first = ingest_email(inbox, b"From: a@example.com\r\nMessage-ID: <>\r\nSubject: one\r\n\r\nFirst")
    second = ingest_email(inbox, b"From: a@example.com\r\nMessage-ID: <>\r\nSubject: two\r\n\r\nSecond")

    assert first.created
    assert second.created
    assert first.message.message_id_synthetic
    assert first.message.header_message_id == ""
    assert second.message.conversation_id != first.message.conversation_id
