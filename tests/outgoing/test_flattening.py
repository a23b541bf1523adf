"""inboxes.smtp_flatten.flatten sends the bytes smtplib's send_message would, only faster to make."""

from __future__ import annotations

import io
import random
import re
import string
from email._policybase import compat32
from email.generator import BytesGenerator

import pytest
from django.core.mail import EmailMultiAlternatives

from conversations.outgoing.compose import mime_message
from inboxes import smtp_flatten

_ALPHABET = string.ascii_letters + string.digits + "      \t;,=<>@\"'()-_.:/?!\x01\x7f"


@pytest.mark.parametrize("max_line_length", [78, 998, 0, None])
def test_a_header_that_fits_its_line_folds_exactly_as_compat32_folds_it(max_line_length):
    stdlib = compat32.clone(linesep="\r\n", max_line_length=max_line_length)
    ours = smtp_flatten._Compat32().clone(linesep="\r\n", max_line_length=max_line_length)
    rng = random.Random(5321)
    for _ in range(5000):
        value = "".join(rng.choice(_ALPHABET) for _ in range(rng.choice([rng.randint(0, 90), rng.randint(0, 1100)])))
        name = rng.choice(["Subject", "To", "References", "X-A-Rather-Long-Header-Name"])
        assert ours.fold_binary(name, value) == stdlib.fold_binary(name, value), value
    # What does not fit, or is not plain ASCII on one line, takes the stdlib's path unchanged.
    for value in ["word " * 40, "Grüße aus Köln", "two\r\n lines", "x" * 2000]:
        assert ours.fold_binary("Subject", value) == stdlib.fold_binary("Subject", value)


def _smtplib_bytes(message) -> bytes:
    """What smtplib.SMTP.send_message flattens for an ASCII envelope (its own code path)."""
    import copy

    outgoing = copy.copy(message)
    del outgoing["Bcc"]
    with io.BytesIO() as buffer:
        BytesGenerator(buffer).flatten(outgoing, linesep="\r\n")
        return buffer.getvalue()


def _same_boundaries(data: bytes) -> bytes:
    names = dict.fromkeys(re.findall(rb'boundary="([^"]+)"', data))
    for number, name in enumerate(names):
        data = data.replace(name, b"BOUNDARY-%d" % number)
    return data


def test_a_reply_with_alternatives_and_an_attachment_flattens_as_smtplib_would():
    email = EmailMultiAlternatives(
        subject="Re: Grüße — the printer is on fire " + "again " * 20, body="Thank you.\n" * 30 + "Ünïcode.\n",
        from_email="Support Team <support@example.test>", to=["Kunde Jürgen <kunde@example.test>"],
        cc=["a@example.test", "b@example.test"], bcc=["hidden@example.test"],
        headers={"Message-ID": "<" + "a" * 90 + "@switchboard.test>", "References": " ".join(
            f"<ref{n}@mail.example.test>" for n in range(30)), "X-Long": "x" * 1200},
    )
    email.attach_alternative("<p>Thank you.</p>", "text/html")
    email.attach("report.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40, "application/pdf")
    message = mime_message(email)
    ours = smtp_flatten.flatten(message)
    assert _same_boundaries(ours) == _same_boundaries(_smtplib_bytes(message))
    assert b"hidden@example.test" not in ours
    assert b"\r\n" in ours
    assert b"\n" not in ours.replace(b"\r\n", b"")


def test_a_boundary_found_inside_the_parts_is_drawn_again(monkeypatch):
    draws = iter([0, int("1" * 32, 16)])
    monkeypatch.setattr(smtp_flatten.random, "getrandbits", lambda _bits: next(draws))
    text = b"a quoted message that happens to hold --=_sb_" + b"0" * 32 + b" in it"
    assert smtp_flatten._Generator._make_boundary(text) == "=_sb_" + "1" * 32
