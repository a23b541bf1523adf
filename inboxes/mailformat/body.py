"""The body of a parsed message: its text, its raw (unsanitized) HTML and its attachments. No database.

The MIME tree is walked iteratively and bounded (depth, part count, text parts). Past a bound
the walk goes on flat, for text only: what a customer wrote stays readable even in a message
built to exhaust the reader, and the cut is recorded in `problems`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import Message as MimeMessage
from email.parser import BytesParser

from inboxes.mailformat.charsets import clean_header, decode_bytes, header_str
from inboxes.mailformat.rawmail import ELIDED_MARK, Elisions, head_end
from inboxes.mailformat.sanitize import html_to_text

# Bounds: MIME nesting and the number of parts read.
MAX_MIME_DEPTH = 32
MAX_PARTS = 500
# Text parts decoded into the body (bounds charset guessing); later ones stay in the raw file.
MAX_TEXT_PARTS = 50
MAX_FILENAME_LENGTH = 255

# Past MAX_PARTS the walk goes on for text only, up to this many parts in all.
MAX_FLAT_PARTS = 20 * MAX_PARTS

_LINE_ENDS = re.compile(r"\r\n?")
_BOUNDARY_LINE = re.compile(rb"(?m)^--[^\r\n]*\r?\n")
_TEXT_TYPE = re.compile(rb"(?im)^content-type:[ \t]*text/(?:plain|html)\b")
_ATTACHMENT = re.compile(rb"(?im)^content-disposition:[ \t]*attachment\b")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\s]")
# Bidirectional overrides, isolates and marks ("invoice\u202Efdp.exe" shows as "invoiceexe.pdf"),
# and C0/C1 controls: nothing a file name needs, everything a disguise does.
_NAME_TRICKS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\x00-\x1f\x7f-\x9f]")


@dataclass
class ParsedPart:
    """An attachment or inline part. `filename` is the sender's name for it: data, never a path."""

    filename: str
    content_type: str
    payload: bytes
    content_id: str = ""
    inline: bool = False


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
    name = clean_header(_NAME_TRICKS.sub("", text))
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
        # (part, depth, flat): a flat part and all below it are read for their text only.
        self.stack: list[tuple[MimeMessage, int, bool]] = [(mime, 0, False)]

    def read(self) -> None:
        seen = 0
        while self.stack:
            part, depth, flat = self.stack.pop()
            seen += 1
            if seen == MAX_PARTS + 1:
                self.problems.append(f"The message has more than {MAX_PARTS} MIME parts; of the rest only "
                                     "the text was read.")
            if seen > MAX_FLAT_PARTS:
                self.problems.append(f"The message has more than {MAX_FLAT_PARTS} MIME parts; the rest were "
                                     "not read.")
                break
            try:
                self.read_part(part, depth, flat or seen > MAX_PARTS)
            except (ValueError, LookupError, UnicodeError, TypeError, AttributeError) as error:
                # One unreadable part must not cost the rest of the message; the raw file keeps it.
                self.problems.append(f"A {part.get_content_type()} part could not be read ({error}); skipped.")

    def set_aside(self, part: MimeMessage) -> bytes | None:
        """For a leaf holding set-aside base64 (see inboxes.mailformat.rawmail): its decoded bytes when
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

    def read_part(self, part: MimeMessage, depth: int, flat: bool) -> None:
        problems = self.problems
        if flat:
            self.read_flat(part, depth)
            return
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
            below = depth >= MAX_MIME_DEPTH
            if below:
                problems.append(f"MIME parts nested deeper than {MAX_MIME_DEPTH} levels were not read as "
                                "parts; their text was read by a flat walk.")
            self.stack.extend((child, depth + 1, below) for child in reversed(part.get_payload()))
            return
        decoded = self.set_aside(part)
        if content_type.startswith("multipart/"):
            # Declared multipart, but the parser found no parts (no or wrong boundary): the
            # customer's words are in there somewhere, so show the raw text rather than nothing.
            problems.append("A multipart section has no readable parts; it is shown as raw text.")
            self.texts.append(decode_part_text(_raw_payload(part), _charset(part), problems))
        elif _is_text(part, content_type, disposition, filename):
            self.read_text(part, content_type, decoded)
        else:
            payload = decoded if decoded is not None else _payload(part, problems)
            if not payload and not filename:
                return
            content_id = _content_id(part)
            inline = disposition == "inline" or (disposition is None and bool(content_id))
            self.attachments.append(ParsedPart(filename, content_type, payload, content_id, inline))


    def read_flat(self, part: MimeMessage, depth: int) -> None:
        """A part below a cut: its text if it is text, nothing else (the raw file keeps the rest)."""
        content_type = part.get_content_type()
        if part.is_multipart():
            if not content_type.startswith("message/"):  # forwarded mail is not the sender's words
                self.stack.extend((child, depth + 1, True) for child in reversed(part.get_payload()))
        elif _is_text(part, content_type, part.get_content_disposition(), _filename(part, [])):
            self.read_text(part, content_type, self.set_aside(part))

    def read_text(self, part: MimeMessage, content_type: str, decoded: bytes | None) -> None:
        problems = self.problems
        if len(self.texts) + len(self.htmls) >= MAX_TEXT_PARTS:
            problems.append(f"Text parts after the first {MAX_TEXT_PARTS} are only in the raw message.")
            return
        payload = decoded if decoded is not None else _payload(part, problems)
        if decoded is None and _bad_base64(part):
            problems.append("A text part is marked base64 but is not; it is shown as sent.")
            payload = _raw_payload(part)
        text = _LINE_ENDS.sub("\n", decode_part_text(payload, _charset(part), problems))
        (self.texts if content_type == "text/plain" else self.htmls).append(text)


def _is_text(part: MimeMessage, content_type: str, disposition: str | None, filename: str) -> bool:
    return content_type in {"text/plain", "text/html"} and disposition != "attachment" and not filename


def read_body(
    mime: MimeMessage, problems: list[str], elisions: Elisions, *, raw_text: bool = False
) -> tuple[str, str, list[ParsedPart]]:
    """Text, raw (unsanitized) HTML and attachments of a parsed message. `raw_text`: the
    parser could not build the MIME tree (nested too deeply), so its text is looked for flat."""
    if raw_text:
        texts, htmls = _flat_raw_walk(elisions.restore(_raw_payload(mime)), problems)
        if not texts and not htmls:
            problems.append("No text part was found in it; the body is shown as raw text.")
            return decode_part_text(elisions.restore(_raw_payload(mime)), "utf-8", problems), "", []
        problems.append("Its text parts were read by a flat walk; attachments are only in the raw message.")
        return _joined(texts, htmls), "\n".join(htmls), []
    reader = _BodyReader(mime, problems, elisions)
    reader.read()
    return _joined(reader.texts, reader.htmls), "\n".join(reader.htmls), reader.attachments


def _joined(texts: list[str], htmls: list[str]) -> str:
    # Previews and search need text, also for a message that only has HTML.
    if texts:
        return "\n\n".join(t.strip("\n") for t in texts)
    html = "\n".join(htmls)
    return html_to_text(html) if html else ""


def _flat_raw_walk(body: bytes, problems: list[str]) -> tuple[list[str], list[str]]:
    """The text parts of a body the parser could not build a tree of: every line that looks
    like a boundary ("--...") ends a section, and a section whose own headers say text/plain
    or text/html (not an attachment) is read as a part. Sections hold no boundary any more,
    so parsing one cannot recurse."""
    texts: list[str] = []
    htmls: list[str] = []
    for section in _BOUNDARY_LINE.split(body)[:MAX_FLAT_PARTS]:
        end, _start = head_end(section)
        head = section[:end]
        if not _TEXT_TYPE.search(head) or _ATTACHMENT.search(head):
            continue
        if len(texts) + len(htmls) >= MAX_TEXT_PARTS:
            problems.append(f"Text parts after the first {MAX_TEXT_PARTS} are only in the raw message.")
            break
        part = BytesParser(policy=policy.compat32).parsebytes(section)
        text = _LINE_ENDS.sub("\n", decode_part_text(_payload(part, problems), _charset(part), problems))
        (texts if part.get_content_type() == "text/plain" else htmls).append(text)
    return texts, htmls


def decode_part_text(payload: bytes, charset: str | None, problems: list[str]) -> str:
    text, problem = decode_bytes(payload, charset)
    if problem:
        problems.append(problem)
    return text
