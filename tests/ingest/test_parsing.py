"""Pure parsing: headers in any encoding, bodies in any charset, identity from the address."""

from __future__ import annotations

import pytest

from inboxes.mailformat.charsets import clean_header, clean_text, decode_bytes, decode_header_text
from inboxes.mailformat.headers import strip_all_prefixes
from inboxes.mailformat.parsing import bound_headers, content_hash, parse_email
from tests.ingest.conftest import mail


@pytest.mark.parametrize(
    ("text", "encoding", "label"),
    [
        ("Grüße aus Köln", "utf-8", "utf-8"),
        ("Grüße aus Köln", "iso-8859-1", "iso-8859-1"),
        ("Ça coûte 20 €", "cp1252", "windows-1252"),
        ("Dzień dobry, Łukasz", "cp1250", "windows-1250"),
        ("Здравствуйте, где мой заказ?", "koi8-r", "koi8-r"),
        ("Здравствуйте, где мой заказ?", "cp1251", "windows-1251"),
        ("お世話になっております", "iso2022_jp", "iso-2022-jp"),
        ("①お世話になっております", "cp932", "shift_jis"),
        ("你好\uff0c我的订单", "gb18030", "gb2312"),
        ("안녕하세요 주문", "cp949", "ks_c_5601-1987"),
        ("Καλημέρα", "cp1253", "windows-1253"),
        ("①お世話になっております", "iso2022_jp_2004", "iso-2022-jp"),  # an extension under the base label
    ],
)
def test_labelled_charsets_decode_exactly(text, encoding, label):
    assert decode_bytes(text.encode(encoding), label) == (text, None)


@pytest.mark.parametrize(
    ("text", "encoding", "label"),
    [
        ("Café crème, déjà vu", "cp1252", "utf-8"),  # the most common mislabel
        ("Grüße café", "utf-8", "iso-8859-1"),  # UTF-8 sent as latin-1
        ("Grüße aus Köln", "cp1252", "x-foo"),  # unknown label
        ("Grüße aus Köln", "cp1252", None),  # no label, 8-bit
        ("Здравствуйте, где мой заказ?", "koi8-r", "x-unknown"),
        ("Здравствуйте, где мой заказ?", "cp1251", "us-ascii"),
        ("こんにちは、注文について質問があります。", "cp932", None),
        ("こんにちは、注文について質問があります。", "euc_jp", "utf-8"),
        ("你好\uff0c我想问一下我的订单什么时候发货。", "gb18030", None),
    ],
)
def test_mislabelled_and_unknown_charsets_are_read_and_reported(text, encoding, label):
    decoded, problem = decode_bytes(text.encode(encoding), label)

    assert decoded == text
    assert problem


def test_utf8_with_one_broken_byte_stays_utf8():
    payload = "Grüße, schön, Straße, Köln, München, Zürich ".encode() * 3 + b"\xff end"

    decoded, problem = decode_bytes(payload, "utf-8")

    assert decoded.startswith("Grüße, schön")
    assert decoded.count("\ufffd") == 1
    assert "broken" in problem


def test_random_bytes_never_become_a_wall_of_question_marks():
    decoded, _ = decode_bytes(bytes(range(128, 256)) * 8, "utf-8")

    assert decoded.count("?") + decoded.count("\ufffd") < len(decoded) / 10


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "Grüße"),
        ("=?UTF-8?B?0J/RgNC40LLQtdGC?=", "Привет"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # whitespace between words goes
        ("=?utf-8?q?a?= plain =?utf-8?q?b?=", "a plain b"),
        ("=?utf-8?B?8J+Y?= =?utf-8?B?gA==?=", "😀"),  # a character split across two words
        ("=?iso-8859-1*de?q?M=E4rz?=", "März"),  # RFC 2231 language tag
        ("=?utf-8?B?###?=", ""),
        ("no words here", "no words here"),
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
    ],
)
def test_encoded_words(raw, expected):
    assert decode_header_text(raw)[0] == expected


def test_clean_text_removes_what_databases_and_json_refuse():
    assert clean_text("a\x00b\ud800c\x1bd\r\ne\tf") == "abcd\r\ne\tf"
    assert clean_header("Hi\r\nBcc: x\x00") == "Hi Bcc: x"


def test_trace_headers_do_not_change_the_content_hash():
    raw = mail("plain.eml")
    delivered_again = b"Received: from elsewhere by imap2; Tue, 4 Feb 2025\r\nX-Spam-Score: 3\r\n" + raw.replace(
        b"Delivered-To: support@switchboard.test\n", b"Delivered-To: other@switchboard.test\n"
    )

    assert content_hash(delivered_again) == content_hash(raw)
    assert content_hash(raw.replace(b"kettle", b"teapot")) != content_hash(raw)
    assert content_hash(raw.replace(b"\n", b"\r\n")) == content_hash(raw)


def test_an_over_long_header_is_cut_before_parsing():
    raw = b"From: a@example.com\r\nSubject: " + b"x" * 2_000_000 + b"\r\n\r\nbody"

    bounded, problems = bound_headers(raw)

    assert len(bounded) < 100_000
    assert bounded.endswith(b"\r\n\r\nbody")
    assert "Subject" in problems[0]


def test_identity_is_the_address_not_the_display_name():
    raw = b'From: "support@switchboard.test" <mallory@evil.example>\r\nSubject: hi\r\n\r\nhello'

    parsed = parse_email(raw, own_addresses=frozenset({"support@switchboard.test"}))

    assert parsed.from_address == "mallory@evil.example"
    assert parsed.from_name == "support@switchboard.test"
    assert parsed.is_automatic is False


def test_a_display_name_with_an_encoded_comma_stays_one_address():
    raw = b"From: x@example.com\r\nTo: =?utf-8?q?Doe=2C_J=C3=BCrgen?= <jd@example.com>, b@example.com\r\n\r\n."

    assert parse_email(raw).to == [
        {"name": "Doe, Jürgen", "address": "jd@example.com"},
        {"name": "", "address": "b@example.com"},
    ]


def test_thread_ids_put_in_reply_to_first_then_references_newest_first():
    raw = b"From: a@example.com\r\nIn-Reply-To: <c@x>\r\nReferences: <a@x>\r\n <b@x> <c@x>\r\n\r\n."

    assert parse_email(raw).thread_ids == ["c@x", "b@x", "a@x"]


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Order", "Order"),
        ("RE: Fwd: AW: Order", "Order"),
        ("Re[2]: Order", "Order"),
        ("Order: Re", "Order: Re"),
        ("Réponse", "Réponse"),
    ],
)
def test_reply_prefixes_leave_the_subject(subject, expected):
    assert strip_all_prefixes(subject) == expected


def test_a_too_large_message_is_read_from_its_headers_only():
    parsed = parse_email(mail("alternative_with_attachment.eml"), headers_only=True)

    assert parsed.from_address == "jose.diaz@example.org"
    assert parsed.attachments == []
    assert parsed.text == ""
