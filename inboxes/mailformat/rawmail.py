"""The raw bytes of a message, beside the stdlib parser: the header block, its bounds, the hash
that identifies a message, and large base64 runs set aside before parsing.

Why set base64 aside: the stdlib feed parser holds a body as a list of line strings and then
joins them, so a 25 MB attachment costs several times its size in memory. Runs of base64 lines
are replaced by a short token line before parsing and decoded straight from the raw bytes
afterwards. The MIME structure is still the stdlib's to read; a token stands for exactly the
bytes it replaced, so putting them back is lossless wherever a token ends up.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field

# A single header field (a folded References can be long; 1 MB is not mail) and the whole
# top-level header block.
MAX_HEADER_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 512 * 1024
# Base64 runs shorter than this stay in place: the parser handles them cheaply.
ELIDE_MIN_BYTES = 64 * 1024

# Headers that make a message what it is. Trace headers added on delivery (Received,
# Delivered-To, Return-Path, X-*) are left out, so one message saved twice hashes the same.
_IDENTITY_HEADERS = {
    b"from", b"sender", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references",
    b"mime-version", b"content-type", b"content-transfer-encoding",
}
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")
# 64 or more full lines of base64, then an optional last short line. Atomic and possessive:
# a plain repeat keeps backtracking state for every line, over 100 MB for a 25 MB attachment.
_BASE64_RUN = re.compile(
    rb"(?m)^(?>[A-Za-z0-9+/]{40,998}+={0,2}\r?\n){64,}+(?:[A-Za-z0-9+/]{0,998}={0,2}\r?\n)?"
)
_HASH_CHUNK = 1024 * 1024
ELIDED_MARK = b"##sb-elided-"
# Any token's shape (the nonce is per message); one compiled pattern serves every message.
_TOKEN = re.compile(re.escape(ELIDED_MARK) + rb"[0-9a-f]+-[0-9]+##")


def head_end(raw: bytes) -> tuple[int, int]:
    """(end of the top-level header block, start of the body); a message without a blank line is
    all header."""
    match = _HEAD_END.search(raw)
    return (match.start(), match.end()) if match else (len(raw), len(raw))


def _fields(head: bytes) -> list[bytes]:
    return [f for f in _FIELD_START.split(head) if f.strip()]


def bound_headers(raw: bytes) -> tuple[bytes, list[str]]:
    """Cut over-long header fields and drop fields past the block limit, before the parser sees them."""
    end, body_start = head_end(raw)
    if end <= MAX_HEADER_FIELD_BYTES:
        return raw, []
    problems: list[str] = []
    kept: list[bytes] = []
    total = 0
    for item in _fields(raw[:end]):
        name = item.split(b":", 1)[0][:60].decode("ascii", errors="replace")
        if len(item) > MAX_HEADER_FIELD_BYTES:
            problems.append(f"The {name} header was {len(item):,} bytes; only the first "
                            f"{MAX_HEADER_FIELD_BYTES // 1024} KB were read.")
            item = item[:MAX_HEADER_FIELD_BYTES].rstrip(b"\r\n") + b"\r\n"
        if total + len(item) > MAX_HEADER_BYTES:
            problems.append(f"The header block is over {MAX_HEADER_BYTES // 1024} KB; later headers were ignored.")
            break
        total += len(item)
        kept.append(item if item.endswith(b"\n") else item + b"\r\n")
    return b"".join(kept) + b"\r\n" + raw[body_start:], problems


def content_hash(raw: bytes) -> str:
    """SHA-256 of what makes the message itself: identity headers and the body, with line ends
    and trailing whitespace normalised. Read in chunks: no copy of a large body."""
    end, body_start = head_end(raw)
    digest = hashlib.sha256()
    for item in _fields(raw[:end]):
        name, _, value = item.partition(b":")
        name = name.strip().lower()
        if name in _IDENTITY_HEADERS:
            digest.update(name + b":" + b" ".join(value.split()) + b"\n")
    digest.update(b"\n")
    body_end = len(raw)
    while body_end > body_start and raw[body_end - 1] in b" \t\r\n":
        body_end -= 1
    view = memoryview(raw)
    carry = b""
    for offset in range(body_start, body_end, _HASH_CHUNK):
        chunk = carry + bytes(view[offset:min(offset + _HASH_CHUNK, body_end)])
        # A CR at a chunk's end may pair with the next chunk's LF.
        carry = b"\r" if chunk.endswith(b"\r") else b""
        digest.update((chunk[:-1] if carry else chunk).replace(b"\r\n", b"\n"))
    digest.update(carry)
    return digest.hexdigest()


def _chomp(line: bytes) -> bytes:
    return line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line


@dataclass
class Elisions:
    """Base64 runs set aside from a message: token line → (start, end) in the original bytes."""

    raw: bytes = b""
    spans: dict[bytes, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def restore(self, data: bytes) -> bytes:
        """`data` with every token line put back as the bytes it stood for."""
        if not self.spans or ELIDED_MARK not in data:
            return data
        # The token's own line end stays in `data`; the span's last line end goes.
        return _TOKEN.sub(self._restored, data)

    def _restored(self, match: re.Match[bytes]) -> bytes:
        token = match.group(0)
        # Something shaped like a token that is not one of ours (another nonce) stays as it is.
        return _chomp(bytes(self._span(token))) if token in self.spans else token

    def _span(self, token: bytes) -> memoryview:
        start, end = self.spans[token]
        return memoryview(self.raw)[start:end]

    def decode_exact(self, payload: bytes) -> bytes | None:
        """The decoded bytes when a base64 part's payload is one token and nothing else."""
        token = payload.strip()
        if token not in self.spans:
            return None
        data = self._span(token)
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            # Truncated: drop the incomplete last quantum, as a lenient decoder would.
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", bytes(data))
            return binascii.a2b_base64(clean[: len(clean) - len(clean) % 4])


def elide_base64(raw: bytes) -> tuple[bytes, Elisions]:
    """The message with long base64 runs (in the body, never the top-level headers) replaced by
    token lines, and what they stood for."""
    elisions = Elisions(raw=raw)
    if len(raw) < ELIDE_MIN_BYTES:
        return raw, elisions  # no run that long fits: skip the scan (most mail)
    _, body_start = head_end(raw)
    nonce = secrets.token_hex(4).encode()
    pieces: list[bytes] = []
    position = body_start
    for match in _BASE64_RUN.finditer(raw, body_start):
        if match.end() - match.start() < ELIDE_MIN_BYTES:
            continue
        token = ELIDED_MARK + nonce + b"-%d##" % len(elisions.spans)
        elisions.spans[token] = (match.start(), match.end())
        pieces += [raw[position:match.start()], token, b"\r\n"]
        position = match.end()
    if not elisions:
        return raw, elisions
    return raw[:body_start] + b"".join(pieces) + raw[position:], elisions
