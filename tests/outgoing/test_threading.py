"""The customer's answer to our reply threads back into the same conversation through ingest."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply

pytestmark = pytest.mark.django_db


def _answer(to_reply, *, in_reply_to: bool = True, references: bool = True) -> bytes:
    email = to_reply.message
    lines = ["From: Ann Customer <ann@example.test>", f"To: {email['From']}", f"Subject: Re: {email['Subject']}",
             "Message-ID: <answer-1@example.test>", "Date: Sat, 21 Nov 2026 11:00:00 +0000"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {email['Message-ID']}")
    if references:
        lines.append(f"References: {email['References']} {email['Message-ID']}")
    return ("\r\n".join(lines) + "\r\n\r\nThanks, the fire is out.\r\n").encode()


@pytest.mark.parametrize(("in_reply_to", "references"), [(True, True), (True, False), (False, True)])
def test_the_customers_answer_joins_the_conversation(smtp_server, inbox_for, customer_thread,
                                                     in_reply_to, references):
    inbox = inbox_for(smtp_server)
    conversation, _ = customer_thread(inbox)
    reply = queue_reply(conversation, text="Use the extinguisher.")
    delivery.deliver_message(reply.pk)
    [received] = smtp_server.wait_for(1)

    result = ingest_email(inbox, _answer(received, in_reply_to=in_reply_to, references=references))

    assert result.message.conversation_id == conversation.pk
    assert not result.conversation_created
    assert conversation.messages.count() == 4
