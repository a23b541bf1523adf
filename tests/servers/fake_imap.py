"""A small IMAP server on loopback that answers as a test tells it: throttling, hostile literals.

Dovecot answers correctly; this one answers the way some servers (or attackers) do. It holds
one folder with the messages it is given and speaks just enough IMAP4rev1 for a poll: greeting,
CAPABILITY, LOGIN, SELECT, UID SEARCH, UID FETCH, UID STORE, NOOP, LOGOUT. A test replaces the
answer to any of them with `answers={"LOGIN": ...}` (keys: the command, or "FETCH BODY" for the
fetch of message bodies), as bytes (`{tag}` is filled in) or as a function that writes to the
socket itself, such as `stream_literal` below.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.servers.dovecot import HOST

Answer = bytes | Callable[[socket.socket, bytes], None]
UIDVALIDITY = 7


def stream_literal(declared: int, *, send_at_most: int = 300 * 1024 * 1024) -> Callable[[socket.socket, bytes], None]:
    """A FETCH answer announcing a `declared`-byte literal, then bytes until the client stops reading."""
    return _stream(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % declared, b"x" * 65536, send_at_most)


def stream_line(*, send_at_most: int = 300 * 1024 * 1024) -> Callable[[socket.socket, bytes], None]:
    """A FETCH answer whose line never ends."""
    return _stream(b"* 1 FETCH (UID 1 BODY[] ", b"x" * 65536, send_at_most)


def stream_untagged(*, send_at_most: int = 300 * 1024 * 1024) -> Callable[[socket.socket, bytes], None]:
    """Short untagged answers, one after another, and never the tagged one that ends the command."""
    return _stream(b"", b"* 1 EXISTS\r\n" * 5000, send_at_most)


def _stream(opening: bytes, chunk: bytes, send_at_most: int) -> Callable[[socket.socket, bytes], None]:
    def answer(sock: socket.socket, tag: bytes) -> None:
        sock.sendall(opening)
        sent = 0
        try:
            while sent < send_at_most:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return  # the client closed the connection: what the tests expect
        sock.close()

    return answer


def bye(text: bytes) -> Callable[[socket.socket, bytes], None]:
    """An untagged BYE, then the connection closes (as servers do when they throw a client out)."""
    def answer(sock: socket.socket, tag: bytes) -> None:
        sock.sendall(b"* BYE " + text + b"\r\n")
        sock.close()

    return answer


@dataclass
class FakeImapServer:
    messages: list[bytes] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # what clients sent, for assertions
    host: str = HOST
    port: int = 0
    _server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> FakeImapServer:
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                _Session(fake, self.request, self.rfile).run()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


_COMMAND = re.compile(rb"^(\S+) (?:UID )?(\S+)(.*)$", re.IGNORECASE)


class _Session:
    def __init__(self, fake: FakeImapServer, sock: socket.socket, rfile) -> None:
        self.fake, self.sock, self.rfile = fake, sock, rfile

    def run(self) -> None:
        self.sock.sendall(b"* OK fake IMAP ready\r\n")
        for line in self.rfile:
            match = _COMMAND.match(line.rstrip(b"\r\n"))
            if not match:
                return
            tag, name, rest = match.group(1), match.group(2).upper().decode(), match.group(3)
            key = "FETCH BODY" if name == "FETCH" and b"BODY" in rest.upper() else name
            self.fake.commands.append(key)
            default = getattr(self, "_" + key.lower().replace(" ", "_"), self._ok)
            answer = self.fake.answers.get(key) or default(rest)
            try:
                if callable(answer):
                    answer(self.sock, tag)
                    return
                self.sock.sendall(answer.replace(b"{tag}", tag))
            except OSError:
                return
            if name == "LOGOUT":
                return

    def _ok(self, rest: bytes) -> bytes:
        return b"{tag} OK done\r\n"

    def _capability(self, rest: bytes) -> bytes:
        return b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n{tag} OK done\r\n"

    def _select(self, rest: bytes) -> bytes:
        count = len(self.fake.messages)
        return (b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\n* OK [UIDNEXT %d] ok\r\n"
                b"{tag} OK [READ-WRITE] selected\r\n" % (count, UIDVALIDITY, count + 1))

    def _search(self, rest: bytes) -> bytes:
        uids = b" ".join(str(uid).encode() for uid in range(1, len(self.fake.messages) + 1))
        return b"* SEARCH " + uids + b"\r\n{tag} OK done\r\n"

    def _fetch(self, rest: bytes) -> bytes:
        when = dt.datetime.now(dt.UTC).strftime("%d-%b-%Y %H:%M:%S +0000").encode()
        lines = [b'* %d FETCH (UID %d RFC822.SIZE %d INTERNALDATE "%s")\r\n' % (uid, uid, len(raw), when)
                 for uid, raw in enumerate(self.fake.messages, start=1)]
        return b"".join(lines) + b"{tag} OK done\r\n"

    def _fetch_body(self, rest: bytes) -> bytes:
        parts = [b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (uid, uid, len(raw), raw)
                 for uid, raw in enumerate(self.fake.messages, start=1)]
        return b"".join(parts) + b"{tag} OK done\r\n"

    def _logout(self, rest: bytes) -> bytes:
        return b"* BYE bye\r\n{tag} OK done\r\n"


@pytest.fixture
def fake_imap() -> Iterator[Callable[..., FakeImapServer]]:
    """Start fake servers: `fake_imap(messages=[raw], answers={"LOGIN": b"{tag} NO ...\\r\\n"})`."""
    started: list[FakeImapServer] = []

    def start(**kwargs) -> FakeImapServer:
        started.append(FakeImapServer(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
