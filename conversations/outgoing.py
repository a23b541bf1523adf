"""Build the email of a stored outgoing Message: headers by the email library, never concatenated.

The same Message always builds the same headers (Message-ID, Date, threading), so a resend is
recognisably the same email. Bcc never appears in the data; the envelope is to + cc + bcc.
"""

from __future__ import annotations

import datetime as dt
import uuid
from email.message import Message as MIMEMessage
from email.utils import format_datetime, formataddr

from django.core.mail import EmailMultiAlternatives

from conversations.models import Message, Priority
from conversations.replies import header_safe, strip_reply_prefixes

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
    return formataddr((header_safe(entry.get("name", "")), ascii_address(entry["address"])))


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


def compose(message: Message) -> bytes | None:
    """The bytes smtplib sends for a stored outgoing Message: CRLF, without Bcc, as smtp.flatten makes them.

    None when the envelope is not plain ASCII: SMTPUTF8 is negotiated per connection, and that
    message is flattened when it is sent.
    """
    from inboxes import smtp

    if smtp.needs_smtputf8(ascii_address(message.from_address), envelope_recipients(message)):
        return None
    return smtp.flatten(mime_message(build_email(message)))
