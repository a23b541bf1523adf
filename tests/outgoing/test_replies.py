"""queue_reply fixes everything up front and refuses what must not be sent; notes never leave."""

from __future__ import annotations

import pytest

from conversations.models import DeliveryStatus, MessageKind
from conversations.outgoing import delivery
from conversations.outgoing.replies import ReplyValidationError, queue_reply, references_for
from inboxes.mailformat.headers import reply_subject

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("subject", "expected"), [
    ("Printer on fire", "Re: Printer on fire"),
    ("Re: Printer on fire", "Re: Printer on fire"),
    ("RE: re: Printer on fire", "Re: Printer on fire"),
    ("Re[2]: Printer on fire", "Re: Printer on fire"),
    ("AW: Drucker brennt", "Re: Drucker brennt"),
    ("Fwd: Printer on fire", "Re: Fwd: Printer on fire"),
    ("Are you there?", "Re: Are you there?"),
    ("", "Re: (no subject)"),
])
def test_the_subject_gets_one_reply_prefix(subject, expected):
    assert reply_subject(subject) == expected


def test_references_keep_the_root_and_the_latest():
    chain = " ".join(f"<m{n}@example.test>" for n in range(30))
    references = references_for(chain, "m30@example.test").split()
    assert len(references) == 20
    assert references[0] == "<m0@example.test>"
    assert references[-2:] == ["<m29@example.test>", "<m30@example.test>"]


def test_a_subject_with_cr_lf_and_a_bcc_line_reaches_exactly_the_intended_recipients(
        smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server),
                                      subject="Hello\r\nBcc: victim@evil.test\r\nX-Injected: yes")
    message = queue_reply(conversation, text="Hi")

    delivery.deliver_message(message.pk)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ann@example.test"]
    email = received.message
    assert email["Bcc"] is None
    assert email["X-Injected"] is None
    assert email["Subject"] == "Re: Hello Bcc: victim@evil.test X-Injected: yes"
    assert b"\nBcc:" not in received.data


def test_display_names_and_attachment_names_cannot_inject_headers(smtp_server, inbox_for, customer_thread, people):
    inbox = inbox_for(smtp_server, sender_name="Support\r\nBcc: victim@evil.test")
    conversation, _ = customer_thread(inbox)
    from conversations.outgoing.replies import AttachmentUpload

    message = queue_reply(conversation, text="Hi", to=[{"name": "Ann\nCc: x@evil.test", "address": "ann@example.test"}],
                          attachments=[AttachmentUpload("a\r\nBcc: victim@evil.test.txt", b"x", "text/plain")])
    delivery.deliver_message(message.pk)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ann@example.test"]
    assert received.message["Bcc"] is None
    assert received.message["Cc"] is None
    [attachment] = list(received.message.iter_attachments())
    assert attachment.get_filename() == "a Bcc: victim@evil.test.txt"


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_a_bad_address_is_named_in_the_validation_error(smtp_server, inbox_for, customer_thread, field):
    conversation, _ = customer_thread(inbox_for(smtp_server))

    with pytest.raises(ReplyValidationError) as error:
        queue_reply(conversation, text="Hi", **{field: ["fine@example.test", "not an address"]})

    assert error.value.field == field
    assert error.value.address == "not an address"
    assert "'not an address' is not a valid email address." in error.value.message_dict[field]
    assert not conversation.messages.filter(direction="out").exists()


def test_an_address_with_a_line_break_is_refused(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    with pytest.raises(ReplyValidationError) as error:
        queue_reply(conversation, text="Hi", cc=["ann@example.test\r\nRCPT TO:<victim@evil.test>"])
    assert error.value.field == "cc"


def test_recipients_outside_the_allowed_domains_are_refused(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, allowed_recipient_domains="example.test\npartner.test"))

    with pytest.raises(ReplyValidationError) as error:
        queue_reply(conversation, text="Hi", cc=["someone@partner.test", "leak@elsewhere.test"])
    assert error.value.field == "cc"
    assert error.value.address == "leak@elsewhere.test"

    message = queue_reply(conversation, text="Hi", cc=["someone@partner.test"])
    assert message.delivery_status == DeliveryStatus.QUEUED


def test_a_note_is_stored_and_never_emailed(smtp_server, inbox_for, customer_thread, people):
    conversation, _ = customer_thread(inbox_for(smtp_server))

    note = queue_reply(conversation, author=people.agent_a, text="Customer is a VIP", kind=MessageKind.NOTE)

    note.refresh_from_db()
    assert note.kind == MessageKind.NOTE
    assert note.delivery_status == ""
    assert delivery.deliver_message(note.pk).status == "not claimed"
    assert note.pk not in delivery.sweep_deliveries().due
    assert smtp_server.received == []


def test_the_agents_name_is_left_out_when_the_inbox_says_so(smtp_server, inbox_for, customer_thread, people):
    conversation, _ = customer_thread(inbox_for(smtp_server, use_agent_name=False))

    message = queue_reply(conversation, author=people.agent_a, text="Hi")

    assert message.from_name == "Acme Support"
