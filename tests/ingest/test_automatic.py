"""Automatic mail is recognised by any one of its signs (RFC 3834 and the de-facto headers)."""

from __future__ import annotations

import pytest

from inboxes.mailformat.parsing import parse_email

OURS = frozenset({"support@switchboard.test"})


def parse(headers: str, *, sender: str = "customer@example.com", content_type: str = "text/plain") -> object:
    raw = f"From: {sender}\r\nSubject: s\r\nContent-Type: {content_type}\r\n{headers}\r\nbody\r\n"
    return parse_email(raw.encode(), own_addresses=OURS)


@pytest.mark.parametrize(
    ("headers", "sender", "content_type", "reason"),
    [
        ("Auto-Submitted: auto-replied\r\n", None, None, "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated; owner-email=x@y\r\n", None, None, "Auto-Submitted: auto-generated"),
        ("X-Autoreply: yes\r\n", None, None, "X-Autoreply header"),
        ("X-Autorespond: whatever\r\n", None, None, "X-Autorespond header"),
        ("Precedence: bulk\r\n", None, None, "Precedence: bulk"),
        ("Precedence: junk\r\n", None, None, "Precedence: junk"),
        ("Precedence: list\r\n", None, None, "Precedence: list"),
        ("Precedence: auto_reply\r\n", None, None, "Precedence: auto_reply"),
        ("X-Auto-Response: yes\r\n", None, None, "X-Auto-Response header"),
        ("X-AutoReply-From: ann@example.com\r\n", None, None, "X-AutoReply-From header"),
        ("X-Mail-Autoreply: yes\r\n", None, None, "X-Mail-Autoreply header"),
        ("X-Precedence: auto_reply\r\n", None, None, "X-Precedence: auto_reply"),
        ("X-Failed-Recipients: ann@example.com\r\n", None, None, "Bounce (X-Failed-Recipients)"),
        # A real Exchange out-of-office: the suppress header rides along, Auto-Submitted decides.
        ("X-Auto-Response-Suppress: All\r\nAuto-Submitted: auto-generated\r\n", None, None,
         "Auto-Submitted: auto-generated"),
        ("List-Id: <news.example.com>\r\n", None, None, "Mailing list (List-Id)"),
        ("List-Unsubscribe: <mailto:u@example.com>\r\n", None, None, "Mailing list (List-Unsubscribe)"),
        ("Return-Path: <>\r\n", None, None, "Empty Return-Path"),
        ("", "MAILER-DAEMON@mx.example.com", None, "Sent by mailer-daemon@mx.example.com"),
        ("", "Support@Switchboard.test", None, "Sent from our own inbox support@switchboard.test"),
        ("", None, "multipart/report; report-type=delivery-status; boundary=x", "Delivery or read report"),
        ("", None, "multipart/report; report-type=disposition-notification; boundary=x", "Delivery or read report"),
    ],
)
def test_automatic_mail_is_flagged_with_its_reason(headers, sender, content_type, reason):
    parsed = parse(headers, sender=sender or "customer@example.com", content_type=content_type or "text/plain")

    assert parsed.is_automatic
    assert parsed.automatic_reason.startswith(reason)


@pytest.mark.parametrize(
    "headers",
    [
        "",
        "Auto-Submitted: no\r\n",
        "Precedence: first-class\r\n",
        "X-Auto-Response-Suppress: None\r\n",
        # It asks others not to auto-reply (Outlook sets it on ordinary mail); it marks no auto-reply.
        "X-Auto-Response-Suppress: All\r\n",
        "X-Auto-Response-Suppress: OOF, AutoReply\r\n",
        # Email services stamp it on transactional mail too, such as a web form's copy of a question.
        "Feedback-ID: 1234:web-form:sendgrid\r\n",
        "X-Autoreply: no\r\n",
        "Return-Path: <customer@example.com>\r\n",
        "Reply-To: support@switchboard.test\r\n",
    ],
)
def test_mail_written_by_a_person_is_not_flagged(headers):
    parsed = parse(headers)

    assert parsed.is_automatic is False
    assert parsed.automatic_reason == ""
