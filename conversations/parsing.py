"""Raw RFC 5322 bytes to a plain ParsedEmail: headers, bodies, attachments, flags. No database.

The stdlib parser runs with the compat32 policy: it never raises on bad headers (policy.default
parses structured headers lazily and some malformed ones raise on access), and we decode
headers ourselves (conversations.charsets) so that every charset and mislabel is handled the
same way in headers and bodies. Everything is bounded; what goes over a bound, or had to be
repaired, is written to `problems` instead of raising.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message as MimeMessage
from email.parser import BytesParser

from conversations.automatic import automatic_reason
from conversations.charsets import clean_header, clean_text, decode_bytes, header_str
from conversations.rawmail import ELIDED_MARK, Elisions, bound_headers, content_hash, elide_base64
from conversations.sanitize import html_to_text, sanitize_html

# Bounds: MIME nesting and the number of parts read, ids kept from References.
MAX_MIME_DEPTH = 32
MAX_PARTS = 500
# Text parts decoded into the body (bounds charset guessing); later ones stay in the raw file.
MAX_TEXT_PARTS = 50
MAX_REFERENCES = 100
MAX_MESSAGE_ID_LENGTH = 900
MAX_FILENAME_LENGTH = 255

_LINE_ENDS = re.compile(r"\r\n?")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\s]")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv|vs|antw|wg|tr|rif|r)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@dataclass
class ParsedPart:
    """An attachment or inline part. `filename` is the sender's name for it: data, never a path."""

    filename: str
    content_type: str
    payload: bytes
    content_id: str = ""
    inline: bool = False


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

    @property
    def thread_ids(self) -> list[str]:
        """Ids this message answers, the most telling first: In-Reply-To, then References newest first."""
        seen: dict[str, None] = {}
        for value in [*self.in_reply_to, *reversed(self.references)]:
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

    def addresses(self, *names: str) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        for name in names:
            for value in self._values.get(name.lower(), []):
                found.extend(self._parse_addresses(name, value))
        return found

    def _parse_addresses(self, name: str, value: str) -> list[dict[str, str]]:
        # Split addresses before decoding: a decoded name may hold the commas and quotes
        # that the encoded form hid from the address parser.
        unfolded = re.sub(r"\r?\n(?=[ \t])", "", value)
        result = []
        for display, address in email.utils.getaddresses([unfolded]):
            address_text = clean_header(header_str(address)[0]).strip("<>").strip()
            if "@" not in address_text or " " in address_text:
                if address_text or display:
                    self._problems.append(f"The {name} header holds something that is not an address.")
                continue
            display_text, problems = header_str(display)
            self._problems.extend(problems)
            result.append({"name": clean_header(display_text)[:255], "address": address_text[:320]})
        return result


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = _ANGLE_ID.search(value)
    candidate = match.group(1) if match else value.strip()
    if not candidate or any(ch.isspace() for ch in candidate):
        return None
    return clean_header(candidate) or None


def _id_list(value: str | None) -> list[str]:
    if not value:
        return []
    ids = _ANGLE_ID.findall(value) or value.split()
    cleaned = [clean_header(i) for i in ids if len(i) <= MAX_MESSAGE_ID_LENGTH]
    return [i for i in cleaned if i][-MAX_REFERENCES:]


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


def strip_reply_prefix(subject: str) -> str:
    """The subject without Re:/Fwd:/AW:… prefixes, for naming a new conversation."""
    return _REPLY_PREFIX.sub("", subject).strip()


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
        problems.append("The MIME structure is nested too deeply to read; the body is shown as raw text.")
    headers = _Headers(mime, problems)

    header_message_id = headers.raw("Message-ID")
    message_id = _message_id(header_message_id)
    if header_message_id is not None and message_id is None:
        problems.append("The Message-ID header is not a valid id.")
    elif message_id and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        problems.append("The Message-ID header is too long to be an id.")
        message_id = None

    senders = headers.addresses("From") or headers.addresses("Sender") or headers.addresses("Reply-To")
    sender = senders[0] if senders else {"name": "", "address": ""}
    if not senders:
        problems.append("The message has no sender address.")

    if headers_only:
        text, html, attachments = "", "", []
    else:
        text, html, attachments = read_body(mime, problems, elisions, raw_text=nested_too_deep)
    content_type = mime.get_content_type()
    reason = automatic_reason(
        headers.text, content_type=content_type, from_address=sender["address"], own_addresses=own_addresses
    )
    subject = headers.text("Subject") or ""
    return ParsedEmail(
        message_id=message_id,
        in_reply_to=_id_list(headers.raw("In-Reply-To")),
        references=_id_list(headers.raw("References")),
        from_name=sender["name"],
        from_address=sender["address"],
        to=headers.addresses("To"),
        cc=headers.addresses("Cc"),
        bcc=headers.addresses("Bcc"),
        reply_to=headers.addresses("Reply-To"),
        subject=subject[:998],
        date=_date(headers.text("Date")),
        text=clean_text(text),
        html=sanitize_html(html) if html else "",
        attachments=attachments,
        is_automatic=bool(reason),
        automatic_reason=reason[:255],
        content_hash=content_hash(raw),
        problems=list(dict.fromkeys(clean_text(problem) for problem in problems)),
    )


def _filename(part: MimeMessage, problems: list[str]) -> str:
    try:
        value = part.get_filename()
    except (ValueError, LookupError, UnicodeError, TypeError):
        value = None
        problems.append("An attachment's file name could not be read.")
    if not value:
        return ""
    text, more = header_str(str(value))  # Outlook puts RFC 2047 words in file names
    problems.extend(more)
    name = clean_header(text)
    if len(name) > MAX_FILENAME_LENGTH:
        # Keep the extension: it is what tells the agent what the file is.
        _stem, dot, extension = name.rpartition(".")
        extension = extension if dot and len(extension) <= 16 else ""
        name = name[: MAX_FILENAME_LENGTH - len(extension) - 1] + ("." + extension if extension else "")
    return name


def _embedded_message_bytes(part: MimeMessage, problems: list[str]) -> bytes:
    payload = part._payload
    if not isinstance(payload, list):
        return _payload(part, problems)
    try:
        return b"\n".join(sub.as_bytes(policy=policy.compat32) for sub in payload)
    except (ValueError, LookupError, UnicodeError, TypeError, AttributeError):
        problems.append("A forwarded message could not be re-serialised; only its text was kept.")
        return "\n".join(_raw_str(sub) for sub in payload).encode("utf-8", errors="surrogateescape")


def _payload(part: MimeMessage, problems: list[str]) -> bytes:
    try:
        return part.get_payload(decode=True) or b""
    except (ValueError, LookupError, UnicodeError, TypeError):
        problems.append("A part's transfer encoding is broken; its raw bytes were kept.")
        return _raw_payload(part)


def _raw_str(part: MimeMessage) -> str:
    # The stored payload as parsed (8-bit bytes as surrogate escapes). get_payload() without
    # decode re-decodes it with the part's charset parameter, which raises on a hostile one.
    raw = part._payload
    return raw if isinstance(raw, str) else ""


def _raw_payload(part: MimeMessage) -> bytes:
    return _raw_str(part).encode("utf-8", errors="surrogateescape")


def _bad_base64(part: MimeMessage) -> bool:
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
        return False
    return _NOT_BASE64.search(_raw_str(part)) is not None


def _charset(part: MimeMessage) -> str | None:
    try:
        return part.get_content_charset()
    except (ValueError, LookupError, UnicodeError, TypeError):
        return None


def _content_id(part: MimeMessage) -> str:
    value = part.get("Content-ID")
    return clean_header(str(value)).strip("<>").strip()[:998] if value else ""


def _defects(part: MimeMessage, problems: list[str]) -> None:
    for defect in getattr(part, "defects", []):
        problems.append(f"MIME damage repaired: {type(defect).__name__}.")


class _BodyReader:
    """Walks the MIME tree (iteratively, bounded) into text, raw HTML and attachments."""

    def __init__(self, mime: MimeMessage, problems: list[str], elisions: Elisions) -> None:
        self.mime = mime
        self.problems = problems
        self.elisions = elisions
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedPart] = []
        self.stack: list[tuple[MimeMessage, int]] = [(mime, 0)]

    def read(self) -> None:
        seen = 0
        while self.stack:
            part, depth = self.stack.pop()
            seen += 1
            if seen > MAX_PARTS:
                self.problems.append(f"The message has more than {MAX_PARTS} MIME parts; the rest were not read.")
                break
            try:
                self.read_part(part, depth)
            except (ValueError, LookupError, UnicodeError, TypeError, AttributeError) as error:
                # One unreadable part must not cost the rest of the message; the raw file keeps it.
                self.problems.append(f"A {part.get_content_type()} part could not be read ({error}); skipped.")

    def set_aside(self, part: MimeMessage) -> bytes | None:
        """For a leaf holding set-aside base64 (see conversations.rawmail): its decoded bytes when
        it is one base64 run; otherwise the run is put back into the part and None returned."""
        if not self.elisions:
            return None
        raw = _raw_payload(part)
        if ELIDED_MARK not in raw:
            return None
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            decoded = self.elisions.decode_exact(raw)
            if decoded is not None:
                return decoded
        part.set_payload(self.elisions.restore(raw).decode("utf-8", errors="surrogateescape"))
        return None

    def read_part(self, part: MimeMessage, depth: int) -> None:
        problems = self.problems
        _defects(part, problems)
        content_type = clean_header(part.get_content_type())[:255]
        disposition = part.get_content_disposition()
        filename = _filename(part, problems)
        if content_type.startswith("message/") and part is not self.mime:
            # Forwarded mail, delivery reports: kept whole, as attachments.
            name = filename or ("forwarded-message.eml" if content_type == "message/rfc822" else "")
            embedded = self.elisions.restore(_embedded_message_bytes(part, problems))
            self.attachments.append(ParsedPart(name, content_type, embedded))
            return
        if part.is_multipart():
            if depth >= MAX_MIME_DEPTH:
                problems.append(f"MIME parts nested deeper than {MAX_MIME_DEPTH} levels were not read.")
                return
            self.stack.extend((child, depth + 1) for child in reversed(part.get_payload()))
            return
        decoded = self.set_aside(part)
        if content_type.startswith("multipart/"):
            # Declared multipart, but the parser found no parts (no or wrong boundary): the
            # customer's words are in there somewhere, so show the raw text rather than nothing.
            problems.append("A multipart section has no readable parts; it is shown as raw text.")
            self.texts.append(decode_part_text(_raw_payload(part), _charset(part), problems))
        elif content_type in {"text/plain", "text/html"} and disposition != "attachment" and not filename:
            if len(self.texts) + len(self.htmls) >= MAX_TEXT_PARTS:
                problems.append(f"Text parts after the first {MAX_TEXT_PARTS} are only in the raw message.")
                return
            payload = decoded if decoded is not None else _payload(part, problems)
            if decoded is None and _bad_base64(part):
                problems.append("A text part is marked base64 but is not; it is shown as sent.")
                payload = _raw_payload(part)
            text = _LINE_ENDS.sub("\n", decode_part_text(payload, _charset(part), problems))
            (self.texts if content_type == "text/plain" else self.htmls).append(text)
        else:
            payload = decoded if decoded is not None else _payload(part, problems)
            if not payload and not filename:
                return
            content_id = _content_id(part)
            inline = disposition == "inline" or (disposition is None and bool(content_id))
            self.attachments.append(ParsedPart(filename, content_type, payload, content_id, inline))


def read_body(
    mime: MimeMessage, problems: list[str], elisions: Elisions, *, raw_text: bool = False
) -> tuple[str, str, list[ParsedPart]]:
    """Text, raw (unsanitized) HTML and attachments of a parsed message."""
    if raw_text:
        return decode_part_text(elisions.restore(_raw_payload(mime)), "utf-8", problems), "", []
    reader = _BodyReader(mime, problems, elisions)
    reader.read()
    html = "\n".join(reader.htmls)
    # Previews and search need text, also for a message that only has HTML.
    texts = reader.texts
    text = "\n\n".join(t.strip("\n") for t in texts) if texts else (html_to_text(html) if html else "")
    return text, html, reader.attachments


def decode_part_text(payload: bytes, charset: str | None, problems: list[str]) -> str:
    text, problem = decode_bytes(payload, charset)
    if problem:
        problems.append(problem)
    return text
