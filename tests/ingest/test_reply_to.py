"""Reply-To: the customer is where replies go (RFC 5322 §3.6.2), the From stays as it was sent."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.outgoing import delivery
from conversations.outgoing.acknowledgements import acknowledge_new_conversation
from conversations.outgoing.replies import queue_reply
from inboxes.mailformat.parsing import parse_email
from tests import factories

WEB_FORM = (b"From: Contact form <noreply@forms.example>\r\nReply-To: Customer <c@x.example>\r\n"
            b"To: support@switchboard.test\r\nSubject: Contact form: my order\r\n"
            b"Message-ID: <form-1@forms.example>\r\nDate: Mon, 3 Feb 2025 09:00:00 +0000\r\n\r\n"
            b"Name: Customer\r\nMessage: where is my order?\r\n")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("Reply-To: Customer <c@x.example>", ("Customer", "c@x.example")),
        ("Reply-To: c@x.example", ("", "c@x.example")),
        ("Reply-To: c@x.example, d@x.example", ("", "")),  # two: no one person to call the customer
        ("Reply-To: c@x.example\r\nReply-To: d@x.example", ("", "")),
        ("Reply-To: c@x.example\r\nList-Id: <orders.lists.example>", ("", "")),
        ("Reply-To: c@x.example\r\nList-Post: <mailto:orders@lists.example>", ("", "")),
        ("Reply-To: c@x.example\r\nPrecedence: list", ("", "")),
        ("Reply-To: Support <support@switchboard.test>", ("", "")),  # one of our own inboxes
        ("Reply-To: Support: ceo@corp.example <evil@x>", ("", "")),
        ("", ("", "")),
    ],
)
def test_where_replies_go(headers, expected):
    raw = f"From: noreply@forms.example\r\n{headers}\r\nSubject: hi\r\n\r\nhello".encode()

    parsed = parse_email(raw, own_addresses=frozenset({"support@switchboard.test"}))

    assert (parsed.reply_name, parsed.reply_address) == expected
    assert parsed.from_address == "noreply@forms.example"


def test_web_form_mail_belongs_to_the_customer_in_reply_to(inbox):
    message = ingest_email(inbox, WEB_FORM).message

    message.refresh_from_db()
    contact = message.conversation.contact
    assert (contact.address, contact.name) == ("c@x.example", "Customer")
    assert (message.from_address, message.from_name) == ("noreply@forms.example", "Contact form")
    assert message.reply_to == [{"name": "Customer", "address": "c@x.example"}]


def test_list_mail_stays_with_its_from(inbox):
    raw = WEB_FORM.replace(b"Subject:", b"List-Id: <orders.lists.example>\r\nSubject:")

    contact = ingest_email(inbox, raw).message.conversation.contact

    assert contact.address == "noreply@forms.example"


def test_the_customers_reply_from_the_reply_to_address_joins_as_the_customer(inbox):
    first = ingest_email(inbox, WEB_FORM).message
    reply = (b"From: Customer <c@x.example>\r\nTo: support@switchboard.test\r\nSubject: Re: my order\r\n"
             b"Message-ID: <c-2@x.example>\r\nIn-Reply-To: <form-1@forms.example>\r\n\r\nAny news?")

    message = ingest_email(inbox, reply).message

    assert message.conversation_id == first.conversation_id
    assert message.new_participant is False


@pytest.fixture
def form_inbox(smtp_server, people):
    return factories.InboxFactory(address="support@switchboard.test", department=people.department_a,
                                  auto_acknowledge=True, **smtp_server.inbox_settings())


def test_a_reply_to_web_form_mail_goes_to_the_reply_to_address(smtp_server, form_inbox):
    conversation = ingest_email(form_inbox, WEB_FORM).message.conversation

    reply = queue_reply(conversation, text="It left today.")
    delivery.deliver_message(reply.pk)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["c@x.example"]
    assert [a.addr_spec for a in received.message["To"].addresses] == ["c@x.example"]


def test_the_acknowledgement_of_web_form_mail_goes_to_the_reply_to_address(smtp_server, form_inbox):
    incoming = ingest_email(form_inbox, WEB_FORM).message

    result = acknowledge_new_conversation(incoming.pk)
    delivery.deliver_message(result.message.pk)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["c@x.example"]
    assert [a.addr_spec for a in received.message["To"].addresses] == ["c@x.example"]
