"""Flattening an email for SMTP: what smtplib's send_message does, without two costs of the stdlib's general case.

CRLF line ends, without Bcc; the bytes queue_reply stores and the transport sends.
"""

from __future__ import annotations

import copy
import io
import random
from collections.abc import Sequence
from email._policybase import Compat32
from email.generator import BytesGenerator
from email.message import Message as MIMEMessage
from typing import Any


class _Compat32(Compat32):
    """compat32, whose folding of a header that fits on its line is the header unchanged.

    compat32 folds every header through email.header.Header, ~50 µs each; for a single-line
    ASCII value within the line limit the result is `Name: value` as given (checked against
    the stdlib's folding in the tests), so that case skips it. Anything else folds as before.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and "\r" not in value and "\n" not in value
                and (not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length)):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


class _Generator(BytesGenerator):
    """A BytesGenerator whose multipart boundaries cost no regular expression.

    The stdlib compiles a new pattern per boundary to check the parts do not contain it. Here a
    boundary of 128 random bits, drawn after the parts are written, is checked against them
    as a plain substring (stricter than the stdlib's line match) and drawn again if found.
    As that check makes it safe, the bits come from `random`, as the stdlib's boundaries do,
    not from a system call to the kernel's generator each.
    """

    @classmethod
    def _make_boundary(cls, text: Any = None) -> str:
        while True:
            boundary = f"=_sb_{random.getrandbits(128):032x}"
            marker = "--" + boundary
            if text is None or (marker.encode() if isinstance(text, bytes) else marker) not in text:
                return boundary


def needs_smtputf8(envelope_from: str, recipients: Sequence[str]) -> bool:
    """Whether an address of the envelope is not ASCII: then smtplib's SMTPUTF8 path sends it."""
    return not "".join([envelope_from, *recipients]).isascii()


def flatten(message: MIMEMessage, *, utf8: bool = False) -> bytes:
    """The bytes smtplib's send_message would send: CRLF, without Bcc.

    With `utf8` (an envelope that needs SMTPUTF8), a message of the modern email policy keeps
    its non-ASCII headers as UTF-8; compat32 (Django's) has no such mode, its headers are ASCII.
    """
    policy = message.policy
    if type(policy) is Compat32:
        policy = _Compat32().clone(**vars(policy))
    elif utf8:
        policy = policy.clone(utf8=True)
    outgoing = copy.copy(message)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    with io.BytesIO() as buffer:
        _Generator(buffer, policy=policy).flatten(outgoing, linesep="\r\n")
        return buffer.getvalue()
