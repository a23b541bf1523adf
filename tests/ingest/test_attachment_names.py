"""Stored attachment names carry no bidi tricks and no control characters."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from inboxes.mailformat.parsing import parse_email


def with_attachment(disposition: str) -> bytes:
    return (
        b"From: a@example.com\r\nTo: support@switchboard.test\r\nSubject: Invoice\r\nMessage-ID: <inv@example.com>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nPlease find the invoice attached.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        + disposition.encode() + b"\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
    )


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        # The right-to-left override: shown as "invoiceexe.pdf", it is an .exe.
        ("Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe", "invoicefdp.exe"),
        ('Content-Disposition: attachment; filename="=?utf-8?q?invoice=E2=80=AEfdp.exe?="', "invoicefdp.exe"),
        ("Content-Disposition: attachment; filename*=utf-8''%E2%81%A6report%E2%81%A9%E2%80%8F.pdf", "report.pdf"),
        ("Content-Disposition: attachment; filename*=utf-8''a%E2%80%AA%E2%80%AB%E2%80%AC%E2%80%ADb.txt", "ab.txt"),
        ("Content-Disposition: attachment; filename*=utf-8''c1%C2%85%C2%9Bname.txt", "c1name.txt"),
        ("Content-Disposition: attachment; filename*=utf-8''tab%09and%07bell.txt", "tabandbell.txt"),
        ("Content-Disposition: attachment; filename*=utf-8''%D8%B9%D8%B1%D8%A8%D9%8A.pdf", "عربي.pdf"),
    ],
)
def test_file_names_lose_bidi_and_control_characters(disposition, expected):
    [attachment] = parse_email(with_attachment(disposition)).attachments

    assert attachment.filename == expected


def test_the_stored_name_is_the_clean_one(inbox):
    raw = with_attachment("Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe")

    attachment = ingest_email(inbox, raw).message.attachments.get()

    attachment.refresh_from_db()
    assert attachment.filename == "invoicefdp.exe"
