"""Subjects as long as a header line may be store whole, longer ones are cut, never refused."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.models import Conversation, Message
from tests.ingest.conftest import compose


@pytest.mark.parametrize(
    ("subject", "message_subject", "conversation_subject"),
    [
        ("x" * 998, "x" * 998, "x" * 998),
        ("Re: " + "ü" * 994, "Re: " + "ü" * 994, "ü" * 994),
        ("Re: " + "\U0001F525" * 994, "Re: " + "\U0001F525" * 994, "\U0001F525" * 994),  # astral: 4 bytes each
        ("Re: AW: " + "y" * 2000, ("Re: AW: " + "y" * 2000)[:998], "y" * 990),
        ("Re:", "Re:", "Re:"),
    ],
)
def test_a_long_subject_stores_without_error(inbox, subject, message_subject, conversation_subject):
    encoded = subject.encode()
    raw = compose(subject="PLACEHOLDER").replace(b"PLACEHOLDER", encoded)

    result = ingest_email(inbox, raw)

    assert result.quarantined is None
    message = Message.objects.get(pk=result.message.pk)
    assert message.subject == message_subject
    assert Conversation.objects.get(pk=message.conversation_id).subject == conversation_subject
