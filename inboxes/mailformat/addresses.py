"""Address headers (From, Sender, Reply-To, To, Cc, Bcc) read strictly, as RFC 5322 writes them.

Identity is the address, so the address must be the one a careful reader of the header finds:
the angle-addr when there is one, else a bare addr-spec; never a word of the display name.
Python 3.11's `email.utils.getaddresses` repairs what it cannot read (`alice@x)<bob@y>` gives
alice) and splits before knowing what is quoted or encoded (CVE-2023-27043), so the header is
lexed here: quoted strings, comments, angle-addrs and RFC 2047 encoded words are each one token
before anything is split at a comma or a colon. Display names are decoded only after the split,
so nothing an encoded name says can move an address.

What cannot be read one way only is refused: the header (or, in a recipient list, the one
entry) yields no address and a problem in plain words. A few forms real mail uses are
accepted and noted: an "@" or "." in an unquoted display name (`bob@x.example
<mallory@evil.example>`), which `name_has_address` then flags for the console's warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from inboxes.mailformat.charsets import clean_header, header_str

MAX_ADDRESS_LENGTH = 320
MAX_NAME_LENGTH = 255

# Headers that hold a mailbox-list or a single mailbox: RFC 5322 allows no group in them.
_NO_GROUPS = {"from", "sender"}
_SINGLE = {"sender"}

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a0-\U0010ffff]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"'
_DOMAIN_LITERAL = r"\[[^\[\]\\\s]*\]"
_ADDR_SPEC = re.compile(rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOT_ATOM}|{_DOMAIN_LITERAL})")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_BLANKS = re.compile(r"[ \t\r\n]+")
_ATOM_RUN = re.compile(r'[^ \t\r\n"(),:;<>@.\[\]\\]+')
_ADDRESS_IN_NAME = re.compile(r"[^\s@<>\"',;:()\[\]]+@[^\s@<>\"',;:()\[\]]+")


@dataclass(frozen=True)
class Mailbox:
    name: str
    address: str
    name_has_address: bool = False  # the display name holds an address other than `address`

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address}


@dataclass(frozen=True)
class AddressList:
    mailboxes: tuple[Mailbox, ...] = ()
    problems: tuple[str, ...] = ()


class _Malformed(Exception):
    """Why a header or one entry of it cannot be read as addresses, in plain words."""


@dataclass
class _Token:
    kind: str  # atom | encoded | quoted | comment | angle | literal | special
    text: str  # quoted and comment: the content, unescaped; angle: what is between < and >
    space_before: bool = False


@dataclass
class _Item:
    tokens: list[_Token] = field(default_factory=list)


def parse_addresses(value: str, *, header: str = "To") -> AddressList:
    """The mailboxes of one address header's raw value (as the parser stores it: undecoded,
    8-bit bytes as surrogate escapes) and the problems met. Never raises."""
    name = header.strip().lower()
    try:
        items = _split(_lex(value), groups=name not in _NO_GROUPS)
    except _Malformed as error:
        return AddressList(problems=(_problem(header, str(error)),))
    mailboxes: list[Mailbox] = []
    problems: list[str] = []
    for item in items:
        try:
            mailboxes.append(_mailbox(item))
        except _Malformed as error:
            if name in _NO_GROUPS:
                # A sender header that is partly unreadable is ambiguous as a whole.
                return AddressList(problems=(_problem(header, str(error)),))
            problems.append(f"An entry of the {header} header is malformed ({error}); it was skipped.")
    if name in _SINGLE and len(mailboxes) > 1:
        return AddressList(problems=(_problem(header, "it names more than one mailbox"),))
    return AddressList(tuple(mailboxes), tuple(problems))


def _problem(header: str, reason: str) -> str:
    return f"The {header} header is ambiguous or malformed ({reason}); it was not read as an address."


# --- lexing: every quoted, commented, bracketed or encoded stretch is one token ---------------

def _lex(value: str) -> list[_Token]:
    text = re.sub(r"\r?\n(?=[ \t])", "", value)
    tokens: list[_Token] = []
    position, space = 0, False
    while position < len(text):
        blank = _BLANKS.match(text, position)
        if blank is not None:
            position, space = blank.end(), True
            continue
        token, position = _next_token(text, position)
        token.space_before = space
        tokens.append(token)
        space = False
    return tokens


def _next_token(text: str, start: int) -> tuple[_Token, int]:
    char = text[start]
    if char == '"':
        content, end = _delimited(text, start, '"', "a quoted string that is never closed")
        return _Token("quoted", content), end
    if char == "(":
        return _comment(text, start)
    if char == "<":
        end = _angle_end(text, start)
        return _Token("angle", text[start + 1:end - 1]), end
    if char == "[":
        close = text.find("]", start)
        if close < 0 or "[" in text[start + 1:close]:
            raise _Malformed("a '[' that is never closed")
        return _Token("literal", text[start:close + 1]), close + 1
    if char in ")>]\\":
        raise _Malformed(f"a stray {char!r}")
    if char in ",:;@.":
        return _Token("special", char), start + 1
    word = _ENCODED_WORD.match(text, start)
    if word is not None:
        return _Token("encoded", word.group(0)), word.end()
    end = _ATOM_RUN.match(text, start).end()
    return _Token("atom", text[start:end]), end


def _delimited(text: str, start: int, close: str, unclosed: str) -> tuple[str, int]:
    content: list[str] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            content.append(text[position + 1])
            position += 2
            continue
        if char == close:
            return "".join(content), position + 1
        content.append(char)
        position += 1
    raise _Malformed(unclosed)


def _comment(text: str, start: int) -> tuple[_Token, int]:
    depth, position, content = 0, start, []
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            content.append(text[position + 1])
            position += 2
            continue
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return _Token("comment", "".join(content[1:])), position + 1
        content.append(char)
        position += 1
    raise _Malformed("a comment '(' that is never closed")


def _angle_end(text: str, start: int) -> int:
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == '"':
            _content, position = _delimited(text, position, '"', "a quoted string that is never closed")
            continue
        if char == "<":
            raise _Malformed("a '<' inside another")
        if char == ">":
            return position + 1
        position += 1
    raise _Malformed("a '<' that is never closed")


# --- splitting: entries at commas, groups "name: a, b;" where the header allows them -----------

def _split(tokens: list[_Token], *, groups: bool) -> list[_Item]:
    items: list[_Item] = [_Item()]
    in_group = False
    for token in tokens:
        if token.kind != "special" or token.text in "@.":
            items[-1].tokens.append(token)
        elif token.text == ",":
            items.append(_Item())
        elif token.text == ":" and not in_group and not _has_angle(items[-1]):
            if not groups:
                raise _Malformed("a group 'name:' where only mailboxes belong")
            items[-1] = _Item()  # the group's name is no address
            in_group = True
        elif token.text == ";" and in_group:
            items.append(_Item())
            in_group = False
        else:
            raise _Malformed(f"a stray {token.text!r}")
    if in_group:
        raise _Malformed("a group that is never closed with ';'")
    return [item for item in items if any(t.kind != "comment" for t in item.tokens)]


def _has_angle(item: _Item) -> bool:
    return any(token.kind == "angle" for token in item.tokens)


# --- one entry: [phrase] <addr-spec>, or a bare addr-spec --------------------------------------

def _mailbox(item: _Item) -> Mailbox:
    words = [token for token in item.tokens if token.kind != "comment"]
    comments = " ".join(token.text for token in item.tokens if token.kind == "comment")
    angles = [index for index, token in enumerate(words) if token.kind == "angle"]
    if angles:
        if len(angles) > 1 or angles[0] != len(words) - 1:
            raise _Malformed("more than an address in angle brackets after the name")
        phrase = words[:-1]
        if any(token.kind == "literal" for token in phrase):
            raise _Malformed("a '[' in the display name")
        address = _addr_spec(words[-1].text.strip())
        name = _decode_phrase(phrase) if phrase else _decode_text(comments)
    else:
        if any(token.space_before for token in words[1:]):
            raise _Malformed("words that are neither a name with <address> nor an address")
        address = _addr_spec("".join(_raw(token) for token in words))
        name = _decode_text(comments)
    hidden = {found.casefold() for found in _ADDRESS_IN_NAME.findall(name)} - {address.casefold()}
    return Mailbox(name, address, name_has_address=bool(hidden))


def _raw(token: _Token) -> str:
    if token.kind == "quoted":
        return '"' + token.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return token.text


def _addr_spec(candidate: str) -> str:
    if not candidate:
        raise _Malformed("an empty address")
    if candidate.startswith("@"):
        raise _Malformed("a source route before the address")
    if _ADDR_SPEC.fullmatch(candidate) is None:
        raise _Malformed("something that is not an address")
    if not candidate.isascii():
        try:  # raw 8-bit bytes (RFC 6532 addresses) must be UTF-8 to be an address at all
            candidate = candidate.encode("utf-8", errors="surrogateescape").decode("utf-8")
        except UnicodeError:
            raise _Malformed("an address that is not valid UTF-8") from None
    if len(candidate) > MAX_ADDRESS_LENGTH:
        raise _Malformed(f"an address longer than {MAX_ADDRESS_LENGTH} characters")
    return candidate


def _decode_phrase(tokens: list[_Token]) -> str:
    parts = []
    for index, token in enumerate(tokens):
        if index and token.space_before:
            parts.append(" ")
        parts.append(token.text)
    return _decode_text("".join(parts))


def _decode_text(text: str) -> str:
    decoded, _problems = header_str(text)  # a name that decodes badly is still a name
    return clean_header(decoded)[:MAX_NAME_LENGTH]
