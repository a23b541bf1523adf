"""Build the email of an outgoing Message once, when it is queued: headers by the email library, never concatenated.

`compose` makes the bytes that replies stores in Message.raw; those exact bytes are what leaves
by SMTP, what an email service gets (`StoredEmail`) and what is saved to the Sent folder.
Bcc never appears in the data; the envelope is to + cc + bcc.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import uuid
from email.headerregistry import Address
from email.message import Message as MIMEMessage
from email.utils import format_datetime, formataddr
from typing import Any

from django.core.mail import EmailMultiAlternatives

from conversations.models import Message, Priority
from inboxes import smtp
from inboxes.mailformat.headers import header_safe, strip_reply_prefixes

_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)

_PRIORITY_HEADERS = {
    Priority.URGENT: {"X-Priority": "1 (Highest)", "Importance": "high", "Priority": "urgent"},
    Priority.HIGH: {"X-Priority": "2 (High)", "Importance": "high"},
    Priority.LOW: {"X-Priority": "5 (Lowest)", "Importance": "low", "Priority": "non-urgent"},
}


def _filetime(moment: dt.datetime) -> int:
    """100-nanosecond intervals since 1601, as Windows counts time."""
    delta = moment - _FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def thread_index(conversation_created: dt.datetime, conversation_id: uuid.UUID,
                 reply_at: dt.datetime | None = None, nonce: int = 0) -> str:
    """Outlook's Thread-Index (MS-OXOMSG PidTagConversationIndex), base64.

    A 22-byte header block (the top six bytes of the conversation's FILETIME and a GUID; here
    the conversation's public id, so every message of a conversation shares it) and, for a
    reply, one 5-byte child block: a time delta from the header and a nibble of nonce.
    """
    import base64

    header_time = _filetime(conversation_created) >> 16
    block = header_time.to_bytes(6, "big") + conversation_id.bytes
    if reply_at is not None:
        delta = max(0, _filetime(reply_at) - (header_time << 16))
        # Deltas under about 1.7 years keep finer resolution (DeltaCode 0); longer ones flag DeltaCode 1.
        code = (delta >> 18) & 0x7FFFFFFF if delta < (1 << 49) else (1 << 31) | ((delta >> 23) & 0x7FFFFFFF)
        block += code.to_bytes(4, "big") + bytes([(nonce & 0x0F) << 4])
    return base64.b64encode(block).decode("ascii")


def ascii_address(address: str) -> str:
    """The address with an internationalised domain in its ASCII (IDNA) form, which every server
    takes: `kunde@bücher.example` → `kunde@xn--bcher-kva.example`. The local part is ASCII
    already: replies validate it so."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not a domain IDNA can spell: left as it is, the server will say no
        return address


def _address(entry: dict[str, str]) -> str:
    # formataddr quotes the display name; Django encodes non-ASCII names (RFC 2047).
    name, address = header_safe(entry.get("name", "")), ascii_address(entry["address"])
    if not address.isascii():  # formataddr refuses it; compose writes it in UTF-8 (_in_utf8)
        return str(_utf8_address(name, address))
    return formataddr((name, address))


def _utf8_address(name: str, address: str) -> Address:
    # Given as parts: Address refuses to parse a non-ASCII local part, which RFC 6532 allows.
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def envelope_recipients(message: Message) -> list[str]:
    """Exactly to + cc + bcc, each once."""
    seen: dict[str, str] = {}
    for entry in [*message.to, *message.cc, *message.bcc]:
        address = ascii_address(entry["address"])
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def headers_for(message: Message) -> dict[str, str]:
    conversation = message.conversation
    is_reply = bool(message.in_reply_to)
    headers = {
        "Message-ID": f"<{message.message_id}>",
        "Date": format_datetime((message.sent_at or message.created_at).astimezone(dt.UTC)),
        "Thread-Topic": strip_reply_prefixes(message.subject) or header_safe(message.subject),
        "Thread-Index": thread_index(conversation.created_at, conversation.public_id,
                                     message.created_at if is_reply else None, nonce=message.public_id.int),
    }
    if message.in_reply_to:
        headers["In-Reply-To"] = header_safe(message.in_reply_to)
    if message.references:
        headers["References"] = header_safe(message.references)
    headers.update(_PRIORITY_HEADERS.get(message.priority, {}))
    if message.is_automatic:
        # RFC 3834: say we are automatic, and ask Exchange not to answer us with its own robots.
        headers["Auto-Submitted"] = "auto-replied"
        headers["X-Auto-Response-Suppress"] = "All"
    return headers


def build_email(message: Message) -> EmailMultiAlternatives:
    """The Django email (text, HTML alternative, attachments) of a stored outgoing Message."""
    email = EmailMultiAlternatives(
        subject=header_safe(message.subject),
        body=message.text,
        from_email=_address({"name": message.from_name, "address": message.from_address}),
        to=[_address(entry) for entry in message.to],
        cc=[_address(entry) for entry in message.cc],
        bcc=[entry["address"] for entry in message.bcc],
        reply_to=[_address(entry) for entry in message.reply_to],
        headers=headers_for(message),
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    # Delivery loads `has_attachments` with the row: most replies have none, and skip the query.
    for attachment in message.attachments.all() if getattr(message, "has_attachments", True) else ():
        with attachment.file.open("rb") as handle:
            email.attach(header_safe(attachment.filename) or "attachment", handle.read(), attachment.content_type)
    return email


def mime_message(email: EmailMultiAlternatives) -> MIMEMessage:
    """The MIME tree smtplib sends; Django's builder refuses CR/LF in headers (BadHeaderError)."""
    mime = email.message()
    # Our Message-IDs are longer than 78 characters: folding would put them on a continuation
    # line, which is legal but trips some clients' threading. Fold only past RFC 5322's hard limit.
    mime.policy = mime.policy.clone(max_line_length=998)
    return mime


def compose(message: Message) -> bytes:
    """The bytes that leave for a stored outgoing Message: CRLF, without Bcc, as smtp.flatten makes them.

    When an address is not ASCII even with its domain in IDNA (the envelope needs SMTPUTF8),
    the address headers are written in UTF-8 (RFC 6532), which is what a server offering
    SMTPUTF8 takes; the rest of the email is byte for byte the same.
    """
    data = smtp.flatten(mime_message(build_email(message)))
    if smtp.needs_smtputf8(ascii_address(message.from_address), envelope_recipients(message)):
        return _in_utf8(data, message)
    return data


def _in_utf8(data: bytes, message: Message) -> bytes:
    """`data` with its address headers written in UTF-8: Django encodes a non-ASCII local part (RFC 2047),
    which no mail client reads as an address."""
    # refold_source="none": the headers that stay are written as they were.
    policy = email.policy.SMTPUTF8.clone(linesep="\r\n", max_line_length=998, refold_source="none")
    modern = email.message_from_bytes(data, policy=policy)
    fields = {"From": [{"name": message.from_name, "address": message.from_address}],
              "To": message.to, "Cc": message.cc, "Reply-To": message.reply_to}
    for name, entries in fields.items():
        if entries and name in modern:
            modern.replace_header(name, [_utf8_address(header_safe(entry.get("name", "")),
                                                       ascii_address(entry["address"])) for entry in entries])
    return smtp.flatten(modern, utf8=True)


class NotComposed(Exception):
    """An outgoing message without stored bytes: it was not queued through queue_reply, and is never built anew."""


def stored_bytes(message: Message) -> bytes:
    """The bytes composed when `message` was queued (Message.raw)."""
    if not message.raw:
        raise NotComposed("This message has no stored email (it was not queued as a reply), so it cannot be sent. "
                          "Write it again as a reply.")
    with message.raw.open("rb") as handle:
        return handle.read()


# ---------------------------------------------------------------------------
# For email services: the stored bytes as a Django email
# ---------------------------------------------------------------------------
# Headers Django's EmailMessage writes itself from its fields.
_OWN_HEADERS = {"from", "to", "cc", "bcc", "reply-to", "subject", "mime-version", "content-type",
                "content-transfer-encoding"}


class StoredMIME(MIMEMessage):
    """The parsed MIME tree of stored bytes, which flattens to exactly those bytes.

    Parsing and generating again may fold headers or encode parts differently; a service that
    sends raw MIME (`as_bytes()`, as Amazon SES does) gets the stored bytes instead.
    """

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.__dict__.update(email.message_from_bytes(raw).__dict__)
        self.raw = raw

    def as_bytes(self, unixfrom: bool = False, policy: Any = None, linesep: str | None = None) -> bytes:
        return self.raw if linesep in (None, "\r\n") else self.raw.replace(b"\r\n", linesep.encode())

    def __bytes__(self) -> bytes:
        return self.raw

    def as_string(self, unixfrom: bool = False, maxheaderlen: int = 0, policy: Any = None) -> str:
        return self.raw.decode("utf-8", errors="surrogateescape")

    def __str__(self) -> str:
        return self.as_string()


class StoredEmail(EmailMultiAlternatives):
    """A Django email made of stored bytes, for anymail: the same content whichever way a service takes it.

    Services that take structured fields get them parsed back from the bytes (subject,
    addresses, headers, text, HTML, attachments); `message()` is the bytes themselves. Bcc is
    not in the bytes; it is the envelope's, from the row.
    """

    def __init__(self, raw: bytes, bcc: list[str]) -> None:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        text, html, attachments = _contents(parsed)
        super().__init__(
            subject=str(parsed.get("Subject", "")), body=text, from_email=(_addresses(parsed, "From") or [""])[0],
            to=_addresses(parsed, "To"), cc=_addresses(parsed, "Cc"), bcc=bcc,
            reply_to=_addresses(parsed, "Reply-To"),
            headers={name: str(value) for name, value in parsed.items() if name.lower() not in _OWN_HEADERS},
        )
        if html is not None:
            self.attach_alternative(html, "text/html")
        for attachment in attachments:
            self.attach(*attachment)
        self.raw = raw

    def message(self) -> StoredMIME:
        return StoredMIME(self.raw)


def _addresses(parsed: MIMEMessage, name: str) -> list[str]:
    header = parsed.get(name)
    return [str(address) for address in header.addresses] if header is not None else []


def _contents(parsed: MIMEMessage) -> tuple[str, str | None, list[tuple[str, bytes, str]]]:
    """The text, the HTML alternative and the attachments (filename, content, type) of a composed email."""
    text, html, attachments = "", None, []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            attachments.append((part.get_filename() or "attachment", part.get_payload(decode=True),
                                part.get_content_type()))
        elif part.get_content_type() == "text/html" and html is None:
            html = part.get_content()
        elif part.get_content_type() == "text/plain" and not text:
            text = part.get_content()
    return text, html, attachments
