"""Large messages: attachments come out byte-exact, in bounded memory, whatever wraps them."""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc

from conversations.incoming.ingest import ingest_email
from inboxes.mailformat.parsing import parse_email
from inboxes.mailformat.rawmail import _HASH_CHUNK, content_hash


def with_attachment(payload: bytes, *, transfer: str = "base64", name: str = "big.bin", wrap: bool = False) -> bytes:
    body = base64.encodebytes(payload) if transfer == "base64" else payload
    part = (
        b"Content-Type: application/octet-stream; name=\"" + name.encode() + b"\"\r\n"
        b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
        b"Content-Transfer-Encoding: " + transfer.encode() + b"\r\n\r\n" + body.replace(b"\n", b"\r\n")
    )
    if wrap:  # inside a forwarded message
        part = (b"Content-Type: message/rfc822\r\n\r\nFrom: x@example.org\r\nSubject: inner\r\n"
                b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n" + part + b"\r\n--in--\r\n")
    return (
        b"From: ada@example.com\r\nSubject: Big\r\nMessage-ID: <big@example.com>\r\n"
        b"Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n--out\r\nContent-Type: text/plain\r\n\r\n"
        b"See attached.\r\n--out\r\n" + part + b"\r\n--out--\r\n"
    )


def test_a_25_mb_attachment_is_parsed_exactly_in_little_more_than_its_size():
    payload = os.urandom(25 * 1024 * 1024)
    raw = with_attachment(payload)

    tracemalloc.start()
    parsed = parse_email(raw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert parsed.text == "See attached."
    assert hashlib.sha256(parsed.attachments[0].payload).digest() == hashlib.sha256(payload).digest()
    assert peak < 1.5 * len(payload)


def test_a_large_base64_run_in_plain_text_is_kept_as_written():
    pasted = base64.encodebytes(os.urandom(200_000)).replace(b"\n", b"\r\n")
    raw = (b"From: ada@example.com\r\nSubject: Pasted\r\nContent-Type: text/plain\r\n\r\n"
           b"Here is the key:\r\n" + pasted + b"Thanks\r\n")

    parsed = parse_email(raw)

    assert parsed.text == ("Here is the key:\r\n" + pasted.decode() + "Thanks").replace("\r\n", "\n")


def test_text_that_looks_like_a_set_aside_run_is_kept_as_written():
    # The placeholder lines have a known shape; a sender's text of that shape is not one of ours.
    pasted = base64.encodebytes(os.urandom(100_000)).replace(b"\n", b"\r\n")
    lookalike = b"##sb-elided-0badc0de-0##"
    raw = (b"From: ada@example.com\r\nSubject: Pasted\r\nContent-Type: text/plain\r\n\r\n"
           + lookalike + b"\r\n" + pasted + lookalike + b"\r\n")

    parsed = parse_email(raw)

    assert parsed.text == (lookalike + b"\r\n" + pasted + lookalike).decode().replace("\r\n", "\n")


def test_a_forwarded_message_with_a_large_attachment_is_kept_whole():
    payload = os.urandom(300_000)

    forwarded = parse_email(with_attachment(payload, wrap=True)).attachments[0]

    assert forwarded.content_type == "message/rfc822"
    inner = parse_email(forwarded.payload)
    assert inner.attachments[0].payload == payload


def test_truncated_base64_keeps_what_can_be_read():
    payload = os.urandom(300_000)
    raw = with_attachment(payload)
    cut = raw.replace(b"\r\n--out--\r\n", b"").rstrip()[:-3] + b"\r\n--out--\r\n"

    attachment = parse_email(cut).attachments[0]

    assert payload.startswith(attachment.payload)
    assert len(attachment.payload) > len(payload) - 10


def test_a_large_message_is_stored_with_its_attachment(db, inbox):
    payload = os.urandom(2 * 1024 * 1024)

    message = ingest_email(inbox, with_attachment(payload, name="report.pdf")).message

    attachment = message.attachments.get()
    assert attachment.filename == "report.pdf"
    assert attachment.size == len(payload)
    assert attachment.file.read() == payload


def test_the_content_hash_reads_line_ends_across_chunk_boundaries():
    head = b"From: a@example.com\r\n\r\n"
    body = (b"x" * (_HASH_CHUNK - 1) + b"\r\n") * 3  # each chunk ends between CR and LF

    assert content_hash(head + body) == content_hash(head.replace(b"\r\n", b"\n") + body.replace(b"\r\n", b"\n"))
