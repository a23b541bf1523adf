"""SMTP PIPELINING (RFC 2920) for inboxes.smtp: a message's commands in one write, their replies read as they come.

Only for servers that offer it and envelopes of plain addresses; inboxes.smtp decides, and
classifies what this raises as it classifies smtplib's own errors.
"""

from __future__ import annotations

import re
import select
import smtplib
import ssl
import time
from collections.abc import Sequence

# An answer to pipelined commands slower than this gives `send(meanwhile=...)` its turn.
SLOW_REPLY_SECONDS = 0.02


# An address smtplib would send as `<address>` unchanged: no quoting, no spaces, no controls.
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def sendmail_pipelined(client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], data: bytes,
                        following: tuple[str, Sequence[str]] | None = None) -> dict[str, tuple[int, bytes]]:
    """smtplib's sendmail in two round trips instead of 3 + recipients, for a server that offers PIPELINING.

    MAIL, every RCPT and DATA go out in one write (RFC 2920, DATA last). The message goes out
    only after a 354, and only when the sender and at least one recipient were accepted;
    `before_data` runs just before it, as in smtplib's data().
    With `following`, the next message's MAIL, RCPT and DATA ride behind this one's data: the
    whole exchange is then one round trip. Failures raise what sendmail raises, so they are
    classified alike, and _transaction closes the connection, as after any failed send.
    """
    if client.replies is None:
        client.replies = Replies(client)
    reader = client.replies
    commands = _envelope_commands(envelope_from, recipients, len(data) if client.has_extn("size") else None)
    if client.pending_envelope is None:
        client.send(commands)
    else:  # they went out behind the previous message (send() checked they are this message's)
        client.pending_envelope = None
    slow_after = time.monotonic() + SLOW_REPLY_SECONDS
    replies = []
    for _ in range(len(recipients) + 2):
        if client.meanwhile is not None and not reader.ready(slow_after - time.monotonic()):
            run_meanwhile(client)  # the server is thinking (a slow RCPT check, a tarpit): use the time
        try:
            replies.append(reader.next())
        except smtplib.SMTPServerDisconnected:
            if replies and replies[-1][0] == 421:  # the server said why it hung up
                raise smtplib.SMTPResponseException(*replies[-1]) from None
            raise
    (mail_code, mail_reply), (data_code, data_reply) = replies[0], replies[-1]
    refused = {address: reply for address, reply in zip(recipients, replies[1:-1], strict=True)
               if reply[0] not in (250, 251)}
    if mail_code != 250 or len(refused) == len(recipients) or data_code != 354:
        if data_code == 354:  # a server that takes DATA with nobody to deliver to gets an empty message
            client.send(b".\r\n")
            reader.next()
        if mail_code != 250:
            raise smtplib.SMTPSenderRefused(mail_code, mail_reply, envelope_from)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        raise smtplib.SMTPDataError(data_code, data_reply)
    # From here the server may have the message. Dot-stuffing is smtplib's, as in data().
    client.run_before_data()
    client.data_handed_over = True
    stuffed = smtplib._quote_periods(data)
    group = stuffed + (b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n")
    if following is not None:  # the next message's envelope rides behind this one's data
        group += _envelope_commands(following[0], following[1], None).encode("ascii")
    client.send(group)
    if following is not None:  # whatever the answer, the server may now await that message's data
        client.pending_envelope = (following[0], tuple(following[1]))
    code, reply = reader.next()
    client.last_reply = f"{code} {reply.decode(errors='replace')}"
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
    return refused


def _envelope_commands(envelope_from: str, recipients: Sequence[str], size: int | None) -> str:
    """MAIL, one RCPT per recipient and DATA, as one pipelined group."""
    size_option = f" SIZE={size}" if size is not None else ""
    commands = [f"MAIL FROM:<{envelope_from}>{size_option}", *(f"RCPT TO:<{address}>" for address in recipients),
                "DATA"]
    return "".join(f"{command}\r\n" for command in commands)


def run_meanwhile(client: smtplib.SMTP) -> None:
    meanwhile, client.meanwhile = client.meanwhile, None
    if meanwhile is not None:
        meanwhile()


class Replies:
    """Reads a pipelined exchange's replies off the socket: several arrive in one read.

    smtplib's getreply() reads line by line through a buffered file, and what that file holds
    cannot be asked without reading. Here the buffer is ours, so whether a whole reply has
    arrived is known without a system call. Between exchanges both buffers are empty (the
    server speaks only when spoken to), so smtplib's own reads before and after are unaffected.
    Errors are smtplib's: a dead or silent connection is closed and raises SMTPServerDisconnected.
    """

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client
        self.buffer = bytearray()

    def _reply_end(self) -> int:
        """Where the first whole reply in the buffer ends, or -1. A reply's last line has no "-" after its code."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) >= 0:
            if end - start < 4 or self.buffer[start + 3] != ord("-"):
                return end + 1
            start = end + 1
        if len(self.buffer) - start > smtplib._MAXLINE:
            self.client.close()
            raise smtplib.SMTPResponseException(500, "Line too long.")
        return -1

    def _read(self) -> None:
        sock = self.client.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            self.client.close()
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}") from exc
        if not chunk:
            self.client.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        self.buffer += chunk

    def ready(self, seconds: float) -> bool:
        """Whether a whole reply is here, waiting up to `seconds` for one to arrive."""
        deadline = time.monotonic() + seconds
        while self._reply_end() < 0:
            sock = self.client.sock
            if sock is None:
                return True  # the next read fails at once
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if not pending and not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return False
            self._read()
        return True

    def next(self) -> tuple[int, bytes]:
        """The next reply, as getreply() gives it: (code, lines without their codes joined by newlines)."""
        while (end := self._reply_end()) < 0:
            self._read()
        lines = bytes(self.buffer[:end]).split(b"\n")[:-1]
        del self.buffer[:end]
        try:
            code = int(lines[-1][:3])
        except ValueError:
            code = -1
        return code, b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
