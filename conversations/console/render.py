"""How a customer's message is shown: HTML in a sandboxed frame, plain text escaped, quotes folded.

The stored HTML was sanitized on the way in (inboxes.mailformat.sanitize). Here it is cleaned
once more with the same allow-lists while its images are rewritten: `cid:` parts become data:
URIs (size-bounded) and remote images lose their source until the agent asks for them. The
result goes into an iframe's srcdoc, which the template renders with `sandbox` (no scripts, no
same origin) and which carries its own CSP: no script, no form, no network but inline images.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass, field

import nh3
import quotequail
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from conversations.models import Attachment, Message
from inboxes.mailformat import sanitize

# Inline (cid:) images are embedded in the frame as data: URIs, up to these sizes; a bigger
# one is listed with the attachments instead, so one huge picture cannot bloat every page view.
INLINE_IMAGE_MAX_BYTES = 1_000_000
INLINE_IMAGES_TOTAL_BYTES = 4_000_000
RASTER = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
_FRAME_POLICY = ("default-src 'none'; img-src data:{remote}; style-src 'unsafe-inline'; font-src 'none'; "
                 "form-action 'none'; base-uri 'none'; frame-src 'none'; object-src 'none'")
_REMOTE = re.compile(r"^\s*https?://", re.IGNORECASE)
_URL = re.compile(r"\b(https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]])", re.IGNORECASE)
REMEMBERED_TEXT_CHARS = 8_000
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)


@dataclass
class Frame:
    srcdoc: str
    remote_images: int = 0
    lines: int = 0
    inline: set[str] = field(default_factory=set)  # content ids embedded in the frame


def _inline_images(message: Message, attachments: list[Attachment]) -> dict[str, str]:
    """content id → data: URI for the message's raster inline parts, within the size bounds."""
    found, total = {}, 0
    for attachment in attachments:
        content_type = attachment.content_type.split(";")[0].strip().lower()
        if not attachment.content_id or content_type not in RASTER or attachment.size > INLINE_IMAGE_MAX_BYTES:
            continue
        if total + attachment.size > INLINE_IMAGES_TOTAL_BYTES:
            break
        with attachment.file.open("rb") as handle:
            data = handle.read(INLINE_IMAGE_MAX_BYTES + 1)
        total += len(data)
        found[attachment.content_id.strip("<>").lower()] = (
            f"data:{content_type};base64,{base64.b64encode(data).decode()}")
    return found


def _clean(html: str, images: dict[str, str], load_remote: bool, counter: list[int]) -> str:
    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            if value.lower().startswith("cid:"):
                return images.get(value[4:].strip().strip("<>").lower())
            if _REMOTE.match(value):
                counter[0] += 1
                return value if load_remote else None
        return sanitize._filter_attribute(tag, attribute, value)

    return nh3.clean(
        html, tags=sanitize._TAGS, clean_content_tags=sanitize._DROP_WITH_CONTENT,
        attributes=sanitize._ATTRIBUTES, attribute_filter=rewrite, url_schemes=sanitize._URL_SCHEMES,
        filter_style_properties=sanitize._STYLE_PROPERTIES, link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def html_frame(message: Message, attachments: list[Attachment], *, load_remote: bool = False) -> Frame:
    """The srcdoc of a message's HTML: quoted history folded behind "…", images as decided."""
    images = _inline_images(message, attachments)
    counter = [0]
    parts = []
    for shown, part in quotequail.quote_html(message.html):
        cleaned = _clean(part, images, load_remote, counter)
        if not cleaned.strip():
            continue
        parts.append(cleaned if shown else
                     f'<details><summary title="Show quoted text">…</summary>{cleaned}</details>')
    body = "".join(parts)
    policy = _FRAME_POLICY.format(remote=" https: http:" if load_remote else "")
    srcdoc = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="referrer" content="no-referrer"><base target="_blank">'
        "</head><body>" + body + "</body></html>"
    )
    lines = body.count("<br") + body.count("<p") + body.count("<tr") + body.count("<div") + len(body) // 400
    return Frame(srcdoc=srcdoc, remote_images=counter[0], lines=lines, inline=set(images))


def frame_height(lines: int) -> int:
    """A height step (1 to 8) for the frame, from a rough line count: a sandboxed frame cannot be measured."""
    return max(1, min(8, 1 + lines // 6))


def _linked(text: str) -> str:
    """Escaped text with http(s) links made clickable; the link text is the escaped URL."""
    out, last = [], 0
    for match in _URL.finditer(text):
        out.append(escape(text[last:match.start()]))
        url = escape(match.group(1))
        out.append(f'<a href="{url}" rel="noopener noreferrer nofollow" target="_blank">{url}</a>')
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


@dataclass(frozen=True)
class TextPart:
    html: SafeString
    folded: bool


def text_parts(text: str) -> tuple[TextPart, ...]:
    """Plain text as escaped, linked parts; quoted history and the signature are folded, never dropped.

    Remembered per text (up to a size, so memory stays bounded): finding quotes is most of the
    cost of showing a long thread, and a thread is opened again and again while it is worked on.
    """
    return _remembered_parts(text) if len(text) <= REMEMBERED_TEXT_CHARS else _text_parts(text)


@functools.lru_cache(maxsize=2048)
def _remembered_parts(text: str) -> tuple[TextPart, ...]:
    return _text_parts(text)


def _text_parts(text: str) -> tuple[TextPart, ...]:
    parts = []
    for shown, part in quotequail.quote(text or ""):
        if shown:
            main, _, signature = _split_signature(part)
            if main.strip():
                parts.append(TextPart(mark_safe(_linked(main.strip("\n"))), False))  # noqa: S308 (escaped above)
            if signature.strip():
                parts.append(TextPart(mark_safe(_linked(signature.strip("\n"))), True))  # noqa: S308
        elif part.strip():
            parts.append(TextPart(mark_safe(_linked(part.strip("\n"))), True))  # noqa: S308
    return tuple(parts)


def _split_signature(text: str) -> tuple[str, str, str]:
    match = None
    for match in _SIGNATURE.finditer(text):  # noqa: B007 (the last delimiter starts the signature)
        pass
    if match is None:
        return text, "", ""
    return text[:match.start()], match.group(0), text[match.end():]
