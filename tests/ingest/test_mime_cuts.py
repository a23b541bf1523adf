"""Past a MIME bound (depth, part count, the parser's own nesting limit) the text is still read."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from inboxes.mailformat.body import MAX_MIME_DEPTH, MAX_PARTS
from inboxes.mailformat.parsing import parse_email

HEAD = b"From: ada@example.com\r\nTo: support@switchboard.test\r\nSubject: Deep\r\nMIME-Version: 1.0\r\n"
WORDS = b"The bottom of the well."


def nested(depth: int, leaves: bytes) -> bytes:
    """`leaves` (parts, each starting with its headers) inside `depth` levels of multipart/mixed."""
    opening = b"".join(b'--n%d\r\nContent-Type: multipart/mixed; boundary="n%d"\r\n\r\n' % (i, i + 1)
                       for i in range(depth))
    inner = b"".join(b"--n%d\r\n%s\r\n" % (depth, leaf) for leaf in leaves.split(b"\x00")) + b"--n%d--\r\n" % depth
    closing = b"".join(b"--n%d--\r\n" % i for i in reversed(range(depth)))
    return HEAD + b'Content-Type: multipart/mixed; boundary="n0"\r\n\r\n' + opening + inner + closing


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + WORDS
HTML = b"Content-Type: text/html\r\n\r\n<p>And <b>this</b> too.</p>"
FILE = b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-1.4"
FORWARDED = b"Content-Type: message/rfc822\r\n\r\nFrom: eve@example.com\r\nSubject: old\r\n\r\nNot Ada's words."


@pytest.mark.parametrize("depth", [MAX_MIME_DEPTH + 5, 2000])
def test_text_below_the_depth_cut_is_still_read(depth):
    parsed = parse_email(nested(depth, b"\x00".join([FILE, TEXT, HTML, FORWARDED])))

    assert WORDS.decode() in parsed.text
    assert "<b>this</b>" in parsed.html
    assert "Not Ada's words" not in parsed.text
    assert "nested" in "\n".join(parsed.problems)
    assert "flat walk" in "\n".join(parsed.problems)


def test_above_the_depth_cut_nothing_changes():
    parsed = parse_email(nested(MAX_MIME_DEPTH - 2, b"\x00".join([TEXT, FILE])))

    assert parsed.text == WORDS.decode()
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    assert parsed.problems == []


def test_text_after_the_part_count_cut_is_still_read():
    part = b"--p\r\nContent-Type: application/octet-stream\r\n\r\nx%d\r\n"
    files = b"".join(part % i for i in range(MAX_PARTS + 100))
    body = files + b"--p\r\nContent-Type: text/plain\r\n\r\nThe words at the end.\r\n--p--\r\n"
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + body

    parsed = parse_email(raw)

    assert parsed.text == "The words at the end."
    assert len(parsed.attachments) < MAX_PARTS
    assert f"more than {MAX_PARTS} MIME parts" in "\n".join(parsed.problems)


def test_the_stored_message_shows_the_text_and_the_cut(inbox):
    message = ingest_email(inbox, nested(50, TEXT)).message

    message.refresh_from_db()
    assert message.text == WORDS.decode()
    assert f"nested deeper than {MAX_MIME_DEPTH} levels" in message.parse_problems
