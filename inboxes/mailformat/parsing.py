"""Raw RFC 5322 bytes to a plain ParsedEmail: headers, flags, and the body (inboxes.mailformat.body). No database.

The stdlib parser runs with the compat32 policy: it never raises on bad headers (policy.default
parses structured headers lazily and some malformed ones raise on access), and we decode
headers ourselves (inboxes.mailformat.charsets) so that every charset and mislabel is handled the
same way in headers and bodies. Everything is bounded; what goes over a bound, or had to be
repaired, is written to `problems` instead of raising.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message as MimeMessage
from email.parser import BytesParser

from inboxes.mailformat.addresses import Mailbox, parse_addresses
from inboxes.mailformat.automatic import automatic_reason
from inboxes.mailformat.body import ParsedPart, read_body
from inboxes.mailformat.bounces import Bounce, read_bounce
from inboxes.mailformat.charsets import clean_header, clean_text, header_str
from inboxes.mailformat.headers import MAX_MESSAGE_ID_LENGTH, message_ids
from inboxes.mailformat.rawmail import Elisions, bound_headers, content_hash, elide_base64
from inboxes.mailformat.sanitize import sanitize_html

# RFC 5322 §2.1.1: a line, and so a subject worth keeping, is at most 998 characters.
MAX_SUBJECT_LENGTH = 998

_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
# RFC 5322 §3.6: at most one of each; two of them name two people, and neither is the sender.
_ONE_FIELD = {"from", "sender", "reply-to"}


@dataclass
class ParsedEmail:
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    from_name: str
    from_address: str
    to: list[dict[str, str]]
    cc: list[dict[str, str]]
    bcc: list[dict[str, str]]
    reply_to: list[dict[str, str]]
    subject: str
    date: datetime | None
    text: str
    html: str
    attachments: list[ParsedPart]
    is_automatic: bool
    automatic_reason: str
    content_hash: str
    problems: list[str] = field(default_factory=list)
    display_name_has_address: bool = False  # the sender's display name holds another address
    # Where replies go (RFC 5322 §3.6.2): the one Reply-To address of mail that is not list mail
    # and not one of ours, else empty (the From).
    reply_address: str = ""
    reply_name: str = ""
    is_list_mail: bool = False
    bounce: Bounce | None = None  # a delivery failure (or delay) report, read by inboxes.mailformat.bounces
    raw_sha256: str = ""  # of the exact bytes, for a message without a usable Message-ID (its dedup key)

    @property
    def thread_ids(self) -> list[str]:
        """Ids this message answers, the most telling first: the message a bounce reports on, then
        In-Reply-To, then References newest first."""
        seen: dict[str, None] = {}
        reported = self.bounce.original_message_ids if self.bounce is not None else ()
        for value in [*reported, *self.in_reply_to, *reversed(self.references)]:
            seen.setdefault(value, None)
        return list(seen)


class _Headers:
    """Decoded access to a parsed message's headers, with the problems decoding met."""

    def __init__(self, mime: MimeMessage, problems: list[str]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in mime.raw_items():
            self._values.setdefault(name.strip().lower(), []).append(str(value))
        self._problems = problems

    def raw(self, name: str) -> str | None:
        values = self._values.get(name.lower())
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        text, problems = header_str(value)
        self._problems.extend(problems)
        return clean_header(text)

    def addresses(self, name: str) -> list[dict[str, str]]:
        return [mailbox.as_dict() for mailbox in self.mailboxes(name)]

    def mailboxes(self, name: str) -> list[Mailbox]:
        """The header's mailboxes, read strictly (inboxes.mailformat.addresses); what could not
        be read is a problem, never a guess."""
        values = self._values.get(name.lower(), [])
        if len(values) > 1 and name.lower() in _ONE_FIELD:
            self._problems.append(f"The message has {len(values)} {name} headers; none of them was used.")
            return []
        found: list[Mailbox] = []
        for value in values:
            parsed = parse_addresses(value, header=name)
            self._problems.extend(parsed.problems)
            found.extend(parsed.mailboxes)
        return found

    def present(self, name: str) -> bool:
        return name.lower() in self._values


def _sender(headers: _Headers) -> Mailbox | None:
    """The first header present of From, Sender, Reply-To decides: an unreadable From is an
    unparseable sender, not a reason to believe another header."""
    for name in ("From", "Sender", "Reply-To"):
        if headers.present(name):
            mailboxes = headers.mailboxes(name)
            return mailboxes[0] if mailboxes else None
    return None


def _is_list_mail(headers: _Headers) -> bool:
    # A list sets Reply-To to itself or to the poster as it likes: it says nothing of who wrote.
    precedence = (headers.text("Precedence") or "").strip().lower()
    return headers.present("List-Id") or headers.present("List-Post") or precedence == "list"


def _reply_address(reply_to: list[dict[str, str]], *, list_mail: bool,
                   own_addresses: frozenset[str]) -> dict[str, str]:
    if len(reply_to) != 1 or list_mail or reply_to[0]["address"].lower() in own_addresses:
        return {"name": "", "address": ""}
    return reply_to[0]


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = _ANGLE_ID.search(value)
    candidate = match.group(1) if match else value.strip()
    # "<>" (and "<@>") is what some robots write for "no id": a missing Message-ID, not an id.
    if not candidate.strip("<>@") or any(ch.isspace() for ch in candidate):
        return None
    return clean_header(candidate) or None


def _id_list(value: str | None) -> list[str]:
    if not value:
        return []
    cleaned = [clean_header(i) for i in message_ids(value)]
    return [i for i in cleaned if i]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        # Year 1 at +01:00 parses, then overflows when the database wants it in UTC.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def parse_email(raw: bytes, *, own_addresses: frozenset[str] = frozenset(), headers_only: bool = False) -> ParsedEmail:
    """Parse raw bytes. Never raises on content: what was wrong is listed in `problems`.

    `headers_only` reads the headers and no body (a message too large to download).
    `own_addresses` are our inboxes' addresses, lower-cased, for recognising our own mail.
    """
    bounded, problems = bound_headers(raw)
    skeleton, elisions = (bounded, Elisions()) if headers_only else elide_base64(bounded)
    parser = BytesParser(policy=policy.compat32)
    try:
        mime = parser.parsebytes(skeleton, headersonly=headers_only)
        nested_too_deep = False
    except RecursionError:
        mime = parser.parsebytes(skeleton, headersonly=True)
        nested_too_deep = True
        problems.append("The MIME structure is nested too deeply to read.")
    headers = _Headers(mime, problems)

    header_message_id = headers.raw("Message-ID")
    message_id = _message_id(header_message_id)
    if header_message_id is not None and message_id is None:
        problems.append("The Message-ID header is not a valid id.")
    elif message_id and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        problems.append("The Message-ID header is too long to be an id.")
        message_id = None

    sender = _sender(headers)
    if sender is None:
        problems.append("The message has no readable sender address.")
        sender = Mailbox("", "")

    if headers_only:
        text, html, attachments = "", "", []
    else:
        text, html, attachments = read_body(mime, problems, elisions, raw_text=nested_too_deep)
    content_type = mime.get_content_type()
    reason = automatic_reason(
        headers.text, content_type=content_type, from_address=sender.address, own_addresses=own_addresses
    )
    subject = headers.text("Subject") or ""
    reply_to = headers.addresses("Reply-To")
    list_mail = _is_list_mail(headers)
    answer_to = _reply_address(reply_to, list_mail=list_mail, own_addresses=own_addresses)
    report_type = email.utils.collapse_rfc2231_value(mime.get_param("report-type", "") or "")
    bounce = read_bounce(
        content_type=content_type, report_type=report_type, subject=subject, from_address=sender.address,
        from_name=sender.name, text=text, parts=attachments, failed_header=headers.text("X-Failed-Recipients") or "",
    )
    return ParsedEmail(
        message_id=message_id,
        in_reply_to=_id_list(headers.raw("In-Reply-To")),
        references=_id_list(headers.raw("References")),
        from_name=sender.name,
        from_address=sender.address,
        display_name_has_address=sender.name_has_address,
        to=headers.addresses("To"),
        cc=headers.addresses("Cc"),
        bcc=headers.addresses("Bcc"),
        reply_to=reply_to,
        reply_address=answer_to["address"],
        reply_name=answer_to["name"],
        is_list_mail=list_mail,
        bounce=bounce,
        subject=subject[:MAX_SUBJECT_LENGTH],
        date=_date(headers.text("Date")),
        text=clean_text(text),
        html=sanitize_html(html) if html else "",
        attachments=attachments,
        is_automatic=bool(reason),
        automatic_reason=reason[:255],
        content_hash=content_hash(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest() if message_id is None else "",
        problems=list(dict.fromkeys(clean_text(problem) for problem in problems)),
    )
