"""Turning the bytes of mail into clean text: any charset, any label, never a wall of "?".

Everything that leaves this module is safe to store: no NUL (PostgreSQL refuses it in text),
no lone surrogates (JSON and UTF-8 encoders refuse them), no other C0 control characters.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from functools import lru_cache

# Labels seen in real mail mapped to the codec that decodes what senders actually meant:
# mail clients label text with the base charset and then use the vendor's superset.
_SUPERSETS = {
    "iso-8859-1": "windows-1252",
    "latin1": "windows-1252",
    "latin-1": "windows-1252",
    "iso-8859-9": "windows-1254",
    "iso-8859-11": "windows-874",
    "tis-620": "windows-874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "big5": "big5hkscs",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}

# ISO-2022-JP mail often carries characters of the Microsoft and JIS X 0213 extensions.
_ISO_2022_JP_FAMILY = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_2")

# Charsets whose encoded form is itself 7-bit: ASCII bytes still need decoding.
_SEVEN_BIT_ENCODINGS = ("utf-7", "iso2022", "hz", "utf-16", "utf-32")

# Codecs that accept every byte, so a clean decode proves nothing about the label being right.
_SINGLE_BYTE_ANYTHING_GOES = {"windows-1252", "latin-1", "iso8859-1", "cp1252"}

# C0 controls except tab, LF, CR; DEL; every surrogate (only lone ones can exist in a str).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SPACES = re.compile(r"\s+")

# How much of a body charset guessing looks at: enough to be right, cheap on big parts.
DETECT_SAMPLE_BYTES = 4 * 1024
# Charsets tried for unlabelled or mislabelled 8-bit text, the most common in mail first (ties go
# to the earlier one). Detectors trained on long text (charset-normalizer) guess wildly on the
# short bodies and headers of mail, so we score plausible readings ourselves.
_GUESSES = ("cp1252", "cp1250", "cp1251", "koi8_r", "cp1253", "cp1254", "cp932", "cp949", "euc_jp", "gb18030",
            "big5", "cp1255", "cp1256", "cp1257")
_KANA = {"HIRAGANA", "KATAKANA"}
_PUNCTUATION = {"Po", "Pd", "Ps", "Pe", "Pi", "Pf", "Zs", "Sc"}


def clean_text(value: str) -> str:
    """Text with the characters databases and JSON reject removed; line breaks kept."""
    return _UNSAFE.sub("", value)


def clean_header(value: str) -> str:
    """A one-line header value: controls and line breaks become spaces, runs of space collapse."""
    return _SPACES.sub(" ", _HEADER_UNSAFE.sub(" ", value)).strip()


def codec_for(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label names nothing we know."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _looks_utf8(payload: bytes) -> bool:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not text.isascii()


def _mostly_utf8(payload: bytes) -> str | None:
    """UTF-8 with a few broken bytes (a truncated line, a pasted character) stays UTF-8."""
    text = payload.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    multibyte = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return text if multibyte and broken * 20 <= multibyte else None


@lru_cache(maxsize=8192)
def _char_class(ch: str) -> tuple[str, str, bool]:
    """(Unicode category, script, is kana) — cached: a text repeats few distinct characters."""
    first = unicodedata.name(ch, "?").split(" ", 1)[0]
    return unicodedata.category(ch), "CJK" if first in _KANA else first, first in _KANA


def _plausibility(text: str) -> float:
    """How much a reading of 8-bit bytes looks like language: letters of one script, in words
    of their own (a Cyrillic letter inside a Latin word, or a run of accented Latin letters,
    is what a wrong code page produces), few symbols and controls."""
    total = 0
    score = 0.0
    scripts: dict[str, int] = {}
    previous = ""
    for index, ch in enumerate(text):
        if ch.isascii():
            previous = ch
            continue
        total += 1
        category, script, kana = _char_class(ch)
        following = text[index + 1] if index + 1 < len(text) else ""
        if category.startswith("L"):
            scripts[script] = scripts.get(script, 0) + 1
            score += 1.5 if kana else 1
            beside_ascii_letter = (previous.isascii() and previous.isalpha()) or (
                following.isascii() and following.isalpha()
            )
            if script != "LATIN" and beside_ascii_letter:
                score -= 1.5
            if script == "LATIN" and not previous.isascii() and not following.isascii() and following.isalpha():
                score -= 1
            if category == "Lu" and previous.isalpha() and previous.islower():
                score -= 1
        elif category in _PUNCTUATION:
            score += 0.5
        else:
            score -= 1
        previous = ch
    if not total:
        return 1.0
    mixed = sum(scripts.values()) - max(scripts.values(), default=0)
    return (score - 2 * mixed) / total


def _guess(payload: bytes) -> str | None:
    sample = payload[:DETECT_SAMPLE_BYTES]
    best: tuple[float, str] | None = None
    for codec in _GUESSES:
        try:
            # A cut sample may end inside a multi-byte character: ignore only the tail.
            text = sample.decode(codec) if len(sample) == len(payload) else sample[:-4].decode(codec)
        except UnicodeDecodeError:
            continue
        score = _plausibility(text)
        if best is None or score > best[0]:
            best = (score, codec)
    return best[1] if best else None


def decode_bytes(payload: bytes, label: str | None) -> tuple[str, str | None]:
    """Decode a body or header chunk; returns (text, problem or None). Never raises.

    Order: the declared charset (or its superset) strictly; for ISO-2022-JP its extensions;
    then UTF-8 (the most common mislabel), also with a few broken bytes; then the most plausible
    reading among common mail charsets, decoded with replacement of the few bytes that charset
    lacks — a handful of marks at worst, never a whole body of "?".
    """
    if not payload:
        return "", None
    codec = codec_for(label)
    if payload.isascii() and not (codec or "").startswith(_SEVEN_BIT_ENCODINGS):
        # 7-bit text reads the same in every ASCII-compatible charset, labelled or not.
        return payload.decode("ascii"), None
    candidates: list[str] = []
    if codec:
        candidates.append(codec)
        if codec.startswith("iso2022_jp"):
            candidates.extend(c for c in _ISO_2022_JP_FAMILY if c != codec)
        if codec == "cp1252":
            candidates.append("iso8859-1")  # the five bytes windows-1252 lacks are C1 controls in latin-1
    for candidate in candidates:
        if candidate in _SINGLE_BYTE_ANYTHING_GOES and _looks_utf8(payload):
            return payload.decode("utf-8"), f"Text labelled {label} was UTF-8; read as UTF-8."
        try:
            return payload.decode(candidate), None
        except (UnicodeDecodeError, LookupError):
            continue
    why = f"Text labelled {label} did not decode as such" if codec else (
        f"Unknown charset {label!r}" if label else "Text without a charset"
    )
    if _looks_utf8(payload):
        return payload.decode("utf-8"), f"{why}; read as UTF-8."
    text = _mostly_utf8(payload)
    if text is not None:
        return text, f"{why}; read as UTF-8 with a few broken characters replaced."
    guessed = _guess(payload)
    if guessed:
        return payload.decode(guessed, errors="replace"), f"{why}; read as {guessed}."
    return payload.decode("windows-1252", errors="replace"), f"{why}; read as windows-1252."


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    data = text.encode("ascii", errors="ignore")
    if encoding in "qQ":
        return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]  # one stray character cannot be base64; the rest still can
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def decode_header_text(value: str) -> tuple[str, list[str]]:
    """Decode RFC 2047 encoded-words in a header value; returns (text, problems). Never raises.

    Adjacent words in one charset are joined as bytes before decoding, because senders split
    multi-byte characters (UTF-8, ISO-2022-JP) across words. Whitespace between words goes,
    as RFC 2047 says; a word that does not decode stays as it was written.
    """
    problems: list[str] = []
    chunks: list[tuple[str | None, bytes | str]] = []  # (charset, bytes) or (None, literal text)
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        literal = value[position:match.start()]
        previous_is_word = bool(chunks) and chunks[-1][0] is not None
        if literal and not (literal.isspace() and previous_is_word):
            chunks.append((None, literal))
        position = match.end()
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            chunks.append((None, match.group(0)))
            problems.append("A header had an encoded word that is not valid base64.")
            continue
        charset = match.group(1).split("*", 1)[0].lower()
        if chunks and chunks[-1][0] == charset:
            chunks[-1] = (charset, bytes(chunks[-1][1]) + data)
        else:
            chunks.append((charset, data))
    if position < len(value):
        chunks.append((None, value[position:]))
    parts: list[str] = []
    for charset, data in chunks:
        if charset is None:
            parts.append(str(data))
            continue
        text, problem = decode_bytes(bytes(data), charset)
        parts.append(text)
        if problem:
            problems.append(f"Header: {problem}")
    return "".join(parts), problems


def header_str(raw_value: str) -> tuple[str, list[str]]:
    """A raw header value as the email parser stores it (8-bit bytes as surrogate escapes),
    unfolded and decoded to text: raw UTF-8 or legacy 8-bit first, then encoded-words."""
    value = re.sub(r"\r?\n(?=[ \t])", "", raw_value).replace("\r", "").replace("\n", "")
    problems: list[str] = []
    if not value.isascii():
        try:
            data = value.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:  # a surrogate that is no escaped byte: not from the byte parser
            data = value.encode("utf-8", errors="replace")
        value, problem = decode_bytes(data, "utf-8")
        if problem:
            problems.append(f"Header: {problem}")
    text, more = decode_header_text(value)
    return text, problems + more
