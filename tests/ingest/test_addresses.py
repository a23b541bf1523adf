"""Address headers read strictly: the address is what a careful reader finds, or nothing."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from inboxes.mailformat.addresses import parse_addresses
from inboxes.mailformat.parsing import parse_email
from tests import factories

UNREADABLE = None


@pytest.mark.parametrize(
    ("header", "value", "expected", "name_has_address"),
    [
        ("From", "Ada Lovelace <ada@example.com>", [("Ada Lovelace", "ada@example.com")], False),
        ("From", '"Doe, John" <jd@example.com>', [("Doe, John", "jd@example.com")], False),
        ("From", "ada@example.com (Ada Lovelace)", [("Ada Lovelace", "ada@example.com")], False),
        ("From", "<ada@example.com>", [("", "ada@example.com")], False),
        ("From", "John Q. Public <jqp@example.com>", [("John Q. Public", "jqp@example.com")], False),
        ("From", '"ada@example.com" <ADA@example.com>', [("ada@example.com", "ADA@example.com")], False),
        # The hostile forms.
        ("From", "bob@x.example <mallory@evil.example>", [("bob@x.example", "mallory@evil.example")], True),
        ("From", "Support: ceo@corp.example <evil@x>", UNREADABLE, False),
        ("To", "Support: ceo@corp.example <evil@x>", UNREADABLE, False),
        ("From", "alice@x)<bob@y>", UNREADABLE, False),
        ("From", "=?utf-8?q?_victim-fromname2@evil.test?= <real@sender.example>",
         [("victim-fromname2@evil.test", "real@sender.example")], True),
        # Decoded, these names hold ':', '<', ',' and an address: the address stays the bracketed one.
        ("From", "=?utf-8?q?victim=3A=3Cv@evil.test=3E=2C?= <real@sender.example>",
         [("victim:<v@evil.test>,", "real@sender.example")], True),
        ("From", "=?utf-8?q?Victim:<v@evil.test>,?= <real@sender.example>",
         [("Victim:<v@evil.test>,", "real@sender.example")], True),
        ("To", "=?utf-8?q?a,_b@evil.test?= <real@sender.example>, c@example.com",
         [("a, b@evil.test", "real@sender.example"), ("", "c@example.com")], True),
        # Malformed in other ways.
        ("From", '<<<@@>>> ,,, "unterminated', UNREADABLE, False),
        ("From", '"Ada <ada@example.com>', UNREADABLE, False),
        ("From", "Ada (unclosed <ada@example.com>", UNREADABLE, False),
        ("From", "Ada <ada@example.com> <eve@example.com>", UNREADABLE, False),
        ("From", "Ada <ada@example.com> eve@example.com", UNREADABLE, False),
        ("From", "ada@example.com eve@example.com", UNREADABLE, False),
        ("From", "<@route.example:ada@example.com>", UNREADABLE, False),
        ("From", "<>", UNREADABLE, False),
        ("From", "ada@example.com, garbage", UNREADABLE, False),
        ("Sender", "a@example.com, b@example.com", UNREADABLE, False),
        ("To", ";;;;", UNREADABLE, False),
        ("Cc", "@", UNREADABLE, False),
        # Recipient lists: groups are allowed there, and one bad entry costs only itself.
        ("To", "undisclosed-recipients:;", [], False),
        ("To", "Team: a@example.com, B <b@example.com>;, c@example.com",
         [("", "a@example.com"), ("B", "b@example.com"), ("", "c@example.com")], False),
        ("To", "a@example.com, garbage, b@example.com", [("", "a@example.com"), ("", "b@example.com")], False),
    ],
)
def test_address_headers_are_read_strictly(header, value, expected, name_has_address):
    parsed = parse_addresses(value, header=header)

    if expected is UNREADABLE:
        assert parsed.mailboxes == ()
        assert header in parsed.problems[0]
    else:
        assert [(m.name, m.address) for m in parsed.mailboxes] == expected
    assert any(m.name_has_address for m in parsed.mailboxes) is name_has_address


def test_a_bad_entry_of_a_recipient_list_is_named_as_a_problem():
    parsed = parse_addresses("a@example.com, garbage", header="Cc")

    assert parsed.problems == ("An entry of the Cc header is malformed (something that is not an address); "
                               "it was skipped.",)


def test_an_address_in_raw_utf8_is_kept_and_raw_latin1_is_refused():
    utf8 = "J\udcc3\udcbcrgen <j\udcc3\udcbcrgen@example.de>"  # as the byte parser stores raw UTF-8
    latin1 = "<j\udcfcrgen@example.de>"

    assert [(m.name, m.address) for m in parse_addresses(utf8, header="From").mailboxes] == [
        ("Jürgen", "jürgen@example.de")]
    assert parse_addresses(latin1, header="From").mailboxes == ()


@pytest.mark.parametrize(
    "sender",
    ["Support: ceo@corp.example <evil@x>", "alice@x)<bob@y>", '"unterminated <ceo@corp.example>'],
)
def test_an_unreadable_from_is_an_unparseable_sender_never_another_header(sender):
    raw = f"From: {sender}\r\nSender: ceo@corp.example\r\nSubject: hi\r\n\r\nhello".encode()

    parsed = parse_email(raw)

    assert parsed.from_address == ""
    assert "From header is ambiguous or malformed" in "\n".join(parsed.problems)


def test_two_from_headers_name_no_sender():
    parsed = parse_email(b"From: ada@example.com\r\nFrom: eve@example.com\r\nSubject: hi\r\n\r\nhello")

    assert parsed.from_address == ""
    assert "2 From headers" in "\n".join(parsed.problems)


def test_a_display_name_that_holds_another_address_is_stored_with_the_warning(inbox):
    bobs = ingest_email(inbox, b"From: Bob <bob@x.example>\r\nMessage-ID: <bob-1@x.example>\r\n"
                               b"Subject: Order\r\n\r\nWhere is it?").message
    raw = (b"From: bob@x.example <mallory@evil.example>\r\nMessage-ID: <m-1@evil.example>\r\n"
           b"In-Reply-To: <bob-1@x.example>\r\nSubject: Re: Order\r\n\r\nSend it to me instead.")

    message = ingest_email(inbox, raw).message

    message.refresh_from_db()
    assert message.from_address == "mallory@evil.example"
    assert message.from_name == "bob@x.example"
    assert message.display_name_has_address is True
    assert bobs.display_name_has_address is False
    # Threads follow the headers, so it joins Bob's conversation, but as someone new: Bob stays
    # the customer, and a reply goes to him, not to Mallory.
    assert message.conversation_id == bobs.conversation_id
    assert message.new_participant is True
    assert message.conversation.contact.address == "bob@x.example"


def test_an_unparseable_sender_is_stored_as_such(inbox):
    raw = b"From: Support: ceo@corp.example <evil@x>\r\nMessage-ID: <s-1@x>\r\nSubject: Wire money\r\n\r\nNow."

    message = ingest_email(inbox, raw).message

    message.refresh_from_db()
    assert message.from_address == ""
    assert "ambiguous or malformed" in message.parse_problems
    assert message.conversation.contact.address.endswith("@switchboard.invalid")


def test_a_reply_to_an_encoded_name_with_a_colon_goes_to_the_real_address(smtp_server, people):
    inbox = factories.InboxFactory(address="support@switchboard.test", department=people.department_a,
                                   **smtp_server.inbox_settings())
    raw = (b"From: =?utf-8?q?victim:_victim-fromname2@evil.test?= <real@sender.example>\r\n"
           b"To: support@switchboard.test\r\nMessage-ID: <cve@sender.example>\r\nSubject: Help\r\n\r\nHi")
    conversation = ingest_email(inbox, raw).message.conversation

    delivery.deliver_message(queue_reply(conversation, text="Hello").pk)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["real@sender.example"]
    assert received.message["To"].addresses[0].addr_spec == "real@sender.example"
