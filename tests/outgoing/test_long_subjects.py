"""Replying to a subject as long as a header line may be (998 characters) stores, and sends, a reply
whose "Re: " subject is cut to the column's length where a reader sees a character begin."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.models import DeliveryStatus, Message
from conversations.outgoing import delivery
from conversations.outgoing.acknowledgements import acknowledge_new_conversation
from conversations.outgoing.replies import queue_reply
from inboxes.mailformat.headers import cut_text, reply_subject

LONG = ("Printer on fire again " * 50)[:997] + "!"
COLUMN = Message._meta.get_field("subject").max_length


def _mail(subject: str, message_id: str) -> bytes:
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"] = "Ann Customer <ann@example.test>"
    mail["To"] = "support@switchboard.test"
    mail["Subject"] = subject  # folded, as a mail client sends a long one
    mail["Message-ID"] = f"<{message_id}>"
    mail["Date"] = "Sat, 21 Nov 2026 10:00:00 +0000"
    mail.set_content("My printer is on fire.")
    return bytes(mail)


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("abcdef", 10, "abcdef"),
    ("abcdef", 4, "abcd"),
    ("ab cd", 3, "ab"),  # no trailing space
    ("abe\u0301", 3, "ab"),  # e + combining acute stays whole
    ("abe\u0301\u0323x", 4, "ab"),  # two combining marks
    ("ok \U0001F469\u200D\U0001F4BB", 5, "ok"),  # woman technologist: a ZWJ sequence
    ("ok \U0001F44D\U0001F3FD", 4, "ok"),  # thumbs up with a skin tone
    ("ok \u2764\uFE0F", 4, "ok"),  # a heart with its emoji variation selector
    ("ok \U0001F1E9\U0001F1EA\U0001F1EB\U0001F1F7", 6, "ok \U0001F1E9\U0001F1EA"),  # two flags: the first kept
    ("ok \U0001F1E9\U0001F1EA\U0001F1EB\U0001F1F7", 5, "ok \U0001F1E9\U0001F1EA"),
    ("ok \u1100\u1161\u11A8", 5, "ok"),  # a Hangul syllable in jamo
    ("ok \udbff\udfff", 4, "ok"),  # a surrogate pair in surrogateescape'd text
])
def test_text_is_cut_where_a_character_begins(text, limit, expected):
    assert cut_text(text, limit) == expected


def test_the_reply_subject_of_a_998_character_subject_fits_its_column():
    subject = reply_subject(LONG, COLUMN)

    assert len(subject) <= COLUMN
    assert subject.startswith("Re: Printer on fire again")
    assert LONG.startswith(subject.removeprefix("Re: "))
    assert reply_subject(subject, COLUMN) == subject  # a reply to the reply: the same subject


def test_a_998_character_reply_subject_of_combining_letters_is_cut_whole():
    subject = reply_subject("e\u0301" * 499, COLUMN)

    assert len(subject) <= COLUMN
    assert subject.endswith("e\u0301")


@pytest.mark.django_db
def test_replying_to_a_998_character_subject_stores_and_sends_the_reply(smtp_server, inbox_for):
    inbox = inbox_for(smtp_server)
    incoming = ingest_email(inbox, _mail(LONG, "long@example.test")).message
    assert incoming.subject == LONG

    reply = queue_reply(incoming.conversation, text="Put it out.")

    reply.refresh_from_db()
    assert len(reply.subject) <= COLUMN
    assert reply.subject.startswith("Re: Printer on fire again")
    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.SENT
    [received] = smtp_server.wait_for(1)
    assert received.message["Subject"] == reply.subject
    assert all(len(line) <= 998 for line in received.data.split(b"\r\n"))


@pytest.mark.django_db
def test_the_acknowledgement_of_a_998_character_subject_is_stored_and_sent(smtp_server, inbox_for):
    inbox = inbox_for(smtp_server, auto_acknowledge=True)
    incoming = ingest_email(inbox, _mail(LONG, "long-ack@example.test")).message

    result = acknowledge_new_conversation(incoming.pk)

    assert result.reason == "sent"
    result.message.refresh_from_db()
    assert len(result.message.subject) <= COLUMN
    assert delivery.deliver_message(result.message.pk).status == DeliveryStatus.SENT
    [received] = smtp_server.wait_for(1)
    assert received.message["Subject"] == result.message.subject
