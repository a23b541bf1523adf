"""The IMAP transport: connect, log in, select a folder, find and fetch messages by UID.

It speaks to servers and knows nothing of conversations. Every failure leaves as an `ImapError`
whose kind says what went wrong and whose message, in plain words, says which step failed and
what to do (inboxes.imap_errors). Rules it keeps, because mail is lost or duplicated otherwise:

- messages are found by UID, never by sequence number, UNSEEN or a date window alone;
- bodies are fetched with BODY.PEEK, so reading never sets \\Seen;
- nothing is ever deleted or expunged: a "move" without the MOVE extension is a COPY;
- nothing the server sends is held unless it fits: imaplib reads a declared literal in one call
  (`{2147483647}` would make it read and hold 2 GB), so the client refuses a literal over the
  inbox's message-size limit plus headroom, a line over imaplib's 1 MB, and an answer to one
  command over twice a batch, before reading it (see `_BoundedReads`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from imap_tools import BaseMailBox, MailBox, MailBoxUnencrypted
from imap_tools.imap_utf7 import utf7_encode

from inboxes.imap_errors import ErrorKind, ImapError, ResponseTooLarge, classify, is_throttling, refused, throttled
from inboxes.models import AuthMethod, Inbox, Security
from inboxes.tls import client_context, imap_context

# UID SEARCH over a window of this many UIDs at a time: a line may not be longer than 1 MB
# (_LINE_LIMIT), which an unbounded search of a big folder would exceed.
SEARCH_WINDOW = 50_000
_FETCH_META_CHUNK = 1_000

# A literal may exceed the message-size limit by this much (or a tenth of it, if more): servers
# count sizes slightly differently (line ends, a header they add on the way out).
_LITERAL_HEADROOM = 1024 * 1024
_LINE_LIMIT = 1_000_000  # imaplib's own _MAXLINE, which imap_tools raises to 20 MB on import
# Lines in answer to one command: a thousand messages' sizes is the most a poll asks for at
# once. Each line kept costs more memory than its bytes, so they are counted too.
_LINES_PER_ANSWER = 100_000

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


@dataclass(frozen=True)
class FolderState:
    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class MessageInfo:
    uid: int
    size: int
    internaldate: dt.datetime | None


def ssl_context(verify: bool) -> ssl.SSLContext:
    """The system's trust store, plus MAIL_CA_FILE when set; no verification only when asked."""
    return client_context(verify, [settings.MAIL_CA_FILE])


def authenticator(inbox: Inbox) -> Callable[[BaseMailBox], None]:
    """How this inbox proves who it is. The one seam XOAUTH2 will fill."""
    if inbox.auth_method == AuthMethod.PASSWORD:
        def login(mailbox: BaseMailBox) -> None:
            password = inbox.imap_secret or ""
            if (inbox.imap_username + password).isascii():
                mailbox.login(inbox.imap_username, password, initial_folder=None)
            else:
                # LOGIN is ASCII-only (RFC 3501 quoted strings); SASL PLAIN carries UTF-8 (RFC 4616).
                mailbox.login_utf8(inbox.imap_username, password, initial_folder=None)
        return login
    raise ImapError(
        ErrorKind.UNSUPPORTED, "log in",
        f"Signing in with {inbox.get_auth_method_display()} is not supported yet. "
        "Use a password or an app password for this inbox for now.",
    )


@dataclass(frozen=True)
class ReadLimits:
    literal: int  # the largest single item (a message's bytes) read into memory
    response: int  # the most read in answer to one command

    @classmethod
    def for_inbox(cls, inbox: Inbox) -> ReadLimits:
        message_limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
        literal = message_limit + max(_LITERAL_HEADROOM, message_limit // 10)
        # A batch's FETCH answer holds up to POLL_BATCH_BYTES (or one message alone, if larger);
        # twice that leaves room for servers whose RFC822.SIZE undercounts.
        return cls(literal=literal, response=2 * max(settings.POLL_BATCH_BYTES, literal))


class _BoundedReads:
    """imaplib's reads, refusing what does not fit before reading it, then closing the socket."""

    file: object

    def __init__(self, *args: object, limits: ReadLimits, **kwargs: object) -> None:
        self.limits = limits
        self._received = self._lines = 0  # since the last command (the greeting counts as one answer)
        super().__init__(*args, **kwargs)

    def _command(self, name: str, *args: object) -> bytes:
        self._received = self._lines = 0
        return super()._command(name, *args)

    def read(self, size: int) -> bytes:
        if size > self.limits.literal:
            self._refuse(f"announced a single item of {size:,} bytes, more than this inbox accepts "
                         f"({self.limits.literal:,} bytes: its largest message plus headroom)")
        self._count(size)
        return super().read(size)

    def readline(self) -> bytes:
        line = self.file.readline(_LINE_LIMIT + 1)
        if len(line) > _LINE_LIMIT:
            self._refuse(f"sent a line of more than {_LINE_LIMIT:,} bytes without a line end")
        self._lines += 1
        if self._lines > _LINES_PER_ANSWER:
            self._refuse(f"sent more than {_LINES_PER_ANSWER:,} lines in answer to one command")
        self._count(len(line))
        return line

    def _count(self, size: int) -> None:
        self._received += size
        if self._received > self.limits.response:
            self._refuse(f"sent more than {self.limits.response:,} bytes in answer to one command")

    def _refuse(self, what: str) -> None:
        # Whatever the server meant to send next is still on the socket: nothing may read it.
        with contextlib.suppress(Exception):
            self.shutdown()
        raise ResponseTooLarge(
            f"The server {what}. Switchboard stopped reading and closed the connection. If the server "
            "really holds a message that large, raise the inbox's maximum message size; otherwise the "
            "server is misbehaving.")


class _BoundedIMAP4(_BoundedReads, imaplib.IMAP4):
    pass


class _BoundedIMAP4SSL(_BoundedReads, imaplib.IMAP4_SSL):
    pass


class _BoundedMailBox(MailBox):
    def __init__(self, host: str, port: int, *, limits: ReadLimits, **kwargs: object) -> None:
        self._limits = limits  # before super(): it connects
        super().__init__(host, port, **kwargs)

    def _get_mailbox_client(self) -> imaplib.IMAP4:
        return _BoundedIMAP4SSL(self._host, self._port, ssl_context=self._ssl_context, timeout=self._timeout,
                                limits=self._limits)


class _BoundedMailBoxUnencrypted(MailBoxUnencrypted):
    def __init__(self, host: str, port: int, *, limits: ReadLimits, **kwargs: object) -> None:
        self._limits = limits
        super().__init__(host, port, **kwargs)

    def _get_mailbox_client(self) -> imaplib.IMAP4:
        return _BoundedIMAP4(self._host, self._port, timeout=self._timeout, limits=self._limits)


def _open(inbox: Inbox) -> BaseMailBox:
    timeout = settings.IMAP_TIMEOUT  # imaplib keeps it on the socket: it bounds every command too
    host, port, limits = inbox.imap_host, inbox.imap_port, ReadLimits.for_inbox(inbox)
    if inbox.imap_security == Security.IMPLICIT_TLS:
        return _BoundedMailBox(host, port, timeout=timeout, ssl_context=imap_context(inbox),
                               limits=limits)
    mailbox = _BoundedMailBoxUnencrypted(host, port, timeout=timeout, limits=limits)
    if inbox.imap_security == Security.STARTTLS:
        if "STARTTLS" not in mailbox.client.capabilities:
            # Never fall back to plaintext: close before anything secret is sent.
            with contextlib.suppress(Exception):
                mailbox.client.shutdown()
            raise ImapError(
                ErrorKind.STARTTLS_MISSING, "start TLS",
                f"The server {host}:{port} does not offer STARTTLS, so Switchboard did not log in "
                "(it never sends a password unencrypted). Check the port, or choose implicit TLS "
                "(usually port 993).",
            )
        typ, data = mailbox.client.starttls(imap_context(inbox))
        if typ != "OK":
            raise ImapError(ErrorKind.TLS, "start TLS", f"The server refused STARTTLS: {data!r}.")
    return mailbox


class ImapSession:
    """One logged-in connection. Use `connect(inbox)`; every method raises ImapError."""

    def __init__(self, inbox: Inbox, mailbox: BaseMailBox) -> None:
        self.inbox = inbox
        self.mailbox = mailbox
        self.client: imaplib.IMAP4 = mailbox.client
        self.folder: FolderState | None = None

    # --- folder --------------------------------------------------------------------------
    def select(self, folder: str) -> FolderState:
        with classify("open the folder", folder=folder):
            typ, data = self.client.select(_quote(folder), readonly=False)
            if typ != "OK" and is_throttling(_text(data)):
                raise throttled("open the folder", _text(data))
            if typ != "OK":
                raise ImapError(
                    ErrorKind.FOLDER_MISSING, "open the folder",
                    f"The folder “{folder}” could not be opened ({_text(data)}). Check the folder name in "
                    "the inbox settings; folder names are case-sensitive on most servers.",
                )
            responses = self.client.untagged_responses
            uidvalidity = int(responses.get("UIDVALIDITY", [b"0"])[-1])
            uidnext = int(responses["UIDNEXT"][-1]) if responses.get("UIDNEXT") else None
            self.folder = FolderState(folder, uidvalidity, uidnext, int(data[0] or 0))
            return self.folder

    # --- finding messages ----------------------------------------------------------------
    def search(self, criteria: str = "ALL", *, after_uid: int = 0) -> list[int]:
        """UIDs greater than `after_uid` matching `criteria`, ascending, searched in UID windows."""
        assert self.folder, "select a folder first"
        upper = (self.folder.uidnext - 1) if self.folder.uidnext else None
        found: list[int] = []
        with classify("search the folder"):
            low = after_uid + 1
            while upper is None or low <= upper:
                high = "*" if upper is None else str(min(upper, low + SEARCH_WINDOW - 1))
                typ, data = self.client.uid("SEARCH", f"UID {low}:{high} {criteria}")
                if typ != "OK":
                    raise refused("search the folder", _text(data))
                # "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8).
                found.extend(uid for uid in map(int, (data[0] or b"").split()) if uid > after_uid)
                if high == "*":
                    break
                low = int(high) + 1
        return sorted(set(found))

    def uids_since(self, moment: dt.datetime) -> list[MessageInfo]:
        """Messages whose INTERNALDATE is at or after `moment` (not just on or after its day)."""
        # SEARCH SINCE compares dates only, in the server's time zone: ask a day wider, then
        # filter on the exact INTERNALDATE.
        day = (moment - dt.timedelta(days=1)).strftime("%d-%b-%Y")
        infos = self.fetch_info(self.search(f"SINCE {day}"))
        return [info for info in infos if info.internaldate and info.internaldate >= moment]

    def fetch_info(self, uids: list[int]) -> list[MessageInfo]:
        """RFC822.SIZE and INTERNALDATE of each UID still present, in UID order."""
        infos: dict[int, MessageInfo] = {}
        with classify("read message sizes"):
            for start in range(0, len(uids), _FETCH_META_CHUNK):
                chunk = uids[start:start + _FETCH_META_CHUNK]
                typ, data = self.client.uid("FETCH", _uid_set(chunk), "(UID RFC822.SIZE INTERNALDATE)")
                _check(typ, data, "read message sizes")
                for line in data:
                    header = line[0] if isinstance(line, tuple) else line
                    uid, size, when = _UID.search(header or b""), _SIZE.search(header or b""), None
                    if not (uid and size):
                        continue  # an unsolicited FETCH (flags changed by another client)
                    if match := _INTERNALDATE.search(header):
                        when = _parse_internaldate(match.group(1))
                    infos[int(uid.group(1))] = MessageInfo(int(uid.group(1)), int(size.group(1)), when)
        return [infos[uid] for uid in sorted(infos)]

    def fetch(self, uids: list[int], *, headers_only: bool = False) -> Iterator[tuple[int, bytes]]:
        """(UID, raw bytes) in UID order, with BODY.PEEK so that \\Seen stays as it is.

        Fetch a bounded batch: the whole response is held in memory until it is consumed.
        """
        if not uids:
            return
        section = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        with classify("fetch messages"):
            typ, data = self.client.uid("FETCH", _uid_set(uids), f"(UID {section})")
            _check(typ, data, "fetch messages")
        found: dict[int, bytes] = {}
        for index, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            match = _UID.search(item[0])
            if not match and index + 1 < len(data) and isinstance(data[index + 1], bytes):
                match = _UID.search(data[index + 1])  # some servers send UID after the literal
            if match:
                found[int(match.group(1))] = item[1]
        del data
        for uid in sorted(found):
            yield uid, found.pop(uid)

    # --- after import ------------------------------------------------------------------------
    def mark_seen(self, uids: list[int]) -> None:
        # Not imap-tools' flag(): it EXPUNGEs afterwards, which would delete what others flagged.
        if uids:
            with classify("mark imported mail read"):
                typ, data = self.client.uid("STORE", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
                _check(typ, data, "mark imported mail read")

    def move(self, uids: list[int], folder: str) -> None:
        """MOVE (RFC 6851); without it COPY and leave the original, because we never delete."""
        if not uids:
            return
        command = "MOVE" if "MOVE" in self.client.capabilities else "COPY"
        with classify("move imported mail", folder=folder):
            typ, data = self.client.uid(command, _uid_set(uids), _quote(folder))
            if typ != "OK" and b"TRYCREATE" in b" ".join(d for d in data if isinstance(d, bytes)):
                self.client.create(_quote(folder))
                typ, data = self.client.uid(command, _uid_set(uids), _quote(folder))
            if typ != "OK":
                raise ImapError(
                    ErrorKind.FOLDER_MISSING, "move imported mail",
                    f"Imported mail could not be moved to “{folder}” ({_text(data)}). Check the folder "
                    "in the inbox settings.",
                )

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> None:
        with classify("save a copy in the folder", folder=folder):
            self.mailbox.append(raw, folder, flag_set=list(flags))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.mailbox.logout()
        with contextlib.suppress(Exception):
            self.client.shutdown()


@contextlib.contextmanager
def connect(inbox: Inbox) -> Iterator[ImapSession]:
    """Connect and log in over the inbox's security mode; logs out on the way out."""
    login = authenticator(inbox)
    with classify("connect to the server", host=f"{inbox.imap_host}:{inbox.imap_port}"):
        mailbox = _open(inbox)
    session = ImapSession(inbox, mailbox)
    try:
        with classify("log in", username=inbox.imap_username):
            login(mailbox)
            # imaplib keeps the capabilities of the greeting; servers list more after login (MOVE).
            typ, data = mailbox.client.capability()
            if typ == "OK" and data and data[-1]:
                mailbox.client.capabilities = tuple(data[-1].decode().upper().split())
        yield session
    finally:
        session.close()


def append(inbox: Inbox, folder: str, raw_bytes: bytes, flags: Iterable[str] = (r"\Seen",)) -> None:
    """Save a message in one of the inbox's folders (for example a reply into Sent)."""
    with connect(inbox) as session:
        session.append(folder, raw_bytes, flags)


def check_connection(inbox: Inbox) -> FolderState:
    """Log in and open the inbox's folder: what a "test connection" button needs."""
    with connect(inbox) as session:
        return session.select(inbox.imap_folder)


def _uid_set(uids: Iterable[int]) -> str:
    """A compact UID set ("1:5,9,12:14") so that commands stay short."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        parts.append(str(start) if start == previous else f"{start}:{previous}")
        if uid is not None:
            start = previous = uid
    return ",".join(parts)


def _quote(folder: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    encoded = utf7_encode(folder).decode()
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_internaldate(value: bytes) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def _text(data: object) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(item) for item in data if item)
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _check(typ: str, data: list, step: str) -> None:
    if typ != "OK":
        raise refused(step, _text(data))
