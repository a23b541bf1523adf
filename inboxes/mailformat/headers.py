"""Header values both ways: one reply-prefix rule, one Message-ID list parser, safe one-line values."""

from __future__ import annotations

import re
import unicodedata

# How many ids a References or In-Reply-To value yields at most (the newest ones): enough for
# any real thread, bounded for a hostile header. Outgoing References keep fewer (compose).
MAX_REFERENCES = 100
MAX_MESSAGE_ID_LENGTH = 900
# RFC 5322's line limit, and the length of the subject columns.
MAX_SUBJECT_LENGTH = 998

# Reply prefixes mail clients add (English, German, Nordic, Dutch, French, Italian, Polish,
# Portuguese...), with counters such as "Re[2]:" or "Re(3):"; and forward prefixes.
_REPLY_WORDS = r"re|aw|sv|vs|antw|réf|ref|rif|odp|res|r"
_FORWARD_WORDS = r"fwd?|wg|tr|enc|rv|pd|doorst"
_COUNTER = r"\s*(?:\[\d+\]|\(\d+\))?\s*:\s*"
_REPLY_PREFIX = re.compile(rf"^\s*(?:(?:{_REPLY_WORDS}){_COUNTER})+", re.IGNORECASE)
_ANY_PREFIX = re.compile(rf"^\s*(?:(?:{_REPLY_WORDS}|{_FORWARD_WORDS}){_COUNTER})+", re.IGNORECASE)
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
# CR, LF, NUL and the other control characters never belong in a header value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """One line of text for a header: control characters become single spaces."""
    return _CONTROL.sub(" ", value or "").strip()


def has_control_characters(value: str) -> bool:
    return bool(_CONTROL.search(value or ""))


def strip_reply_prefixes(subject: str) -> str:
    """The subject without its reply prefixes ("Re: AW: x" → "x"); forward prefixes stay."""
    return _REPLY_PREFIX.sub("", header_safe(subject)).strip()


def strip_all_prefixes(subject: str) -> str:
    """The subject without reply and forward prefixes, for naming a new conversation."""
    return _ANY_PREFIX.sub("", header_safe(subject)).strip()


def reply_subject(subject: str, max_length: int = MAX_SUBJECT_LENGTH) -> str:
    """ "Re: " + the subject without its reply prefixes (no "Re: Re:", no "RE: AW:"), in `max_length` characters."""
    base = cut_text(strip_reply_prefixes(subject), max_length - len("Re: "))
    return f"Re: {base}" if base else "Re: (no subject)"


def cut_text(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut where a reader sees a new character begin.

    Never between a letter and its combining marks, inside an emoji sequence (joiners,
    modifiers, variation selectors, tags, a flag's two letters), a Hangul syllable's jamo or a
    surrogate pair. A single such sequence longer than `limit` is cut at `limit`.
    """
    if len(text) <= limit:
        return text
    end = limit
    while end > 0 and _continues(text, end):
        end -= 1
    return (text[:end] if end else text[:limit]).rstrip()


def _continues(text: str, index: int) -> bool:
    """Whether text[index] belongs to the character that text[index - 1] is part of."""
    here, before = ord(text[index]), ord(text[index - 1])
    return (
        unicodedata.category(text[index]) in ("Mn", "Mc", "Me")
        or 0x200D in (here, before)  # zero-width joiner, on either side
        or 0xFE00 <= here <= 0xFE0F or 0xE0100 <= here <= 0xE01EF  # variation selectors
        or 0x1F3FB <= here <= 0x1F3FF or 0xE0020 <= here <= 0xE007F  # skin tones; tag characters
        or 0x1160 <= here <= 0x11FF or 0xD7B0 <= here <= 0xD7FF  # Hangul vowel and final jamo
        or (0xDC00 <= here <= 0xDFFF and 0xD800 <= before <= 0xDBFF)  # a surrogate pair (surrogateescape'd text)
        or (_regional(here) and _regional_run(text, index) % 2 == 1)  # the second letter of a flag
    )


def _regional(code_point: int) -> bool:
    return 0x1F1E6 <= code_point <= 0x1F1FF


def _regional_run(text: str, index: int) -> int:
    """How many regional indicator letters come right before text[index]."""
    count = 0
    while index - count - 1 >= 0 and _regional(ord(text[index - count - 1])):
        count += 1
    return count


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs (without angle brackets) of an In-Reply-To or References value, oldest
    first, the newest MAX_REFERENCES of them. Bare ids without brackets count where no
    bracketed one is present (some clients write them so)."""
    if not value:
        return []
    found = _ANGLE_ID.findall(value) or [token.strip("<>") for token in value.split() if "@" in token]
    kept = [header_safe(i) for i in found if len(i) <= MAX_MESSAGE_ID_LENGTH]
    return [i for i in kept if i.strip("<>@")][-MAX_REFERENCES:]  # "<>" and "<@>" name nothing
