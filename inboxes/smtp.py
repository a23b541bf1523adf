"""SMTP (and email-service) transport for one inbox: connect, secure, log in, send, classify failures.

It knows nothing of conversations. Errors come in three kinds, because they call for three
different responses from whoever sends:

- `TransientError`: nothing was handed over (refused connection, timeout, TLS failure, 4xx);
  trying again later is safe.
- `PermanentError`: the server said no (5xx, every recipient refused); trying again won't help.
- `DataSentNoAnswer`: the data went out and no answer came after the final dot. The server may
  have the message, so resending blindly could deliver it twice.
"""

from __future__ import annotations

import copy
import hashlib
import io
import random
import re
import select
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email._policybase import Compat32
from email.generator import BytesGenerator
from email.message import Message as MIMEMessage
from typing import Any

from django.conf import settings

from inboxes.models import AuthMethod, Inbox, Security
from inboxes.tls import client_context

# A reused connection idle longer than this is replaced: servers drop idle clients (RFC 5321
# allows 5 minutes, many cut sooner) and a dead socket would cost a failed attempt.
POOL_IDLE_SECONDS = 20.0
# An answer to pipelined commands slower than this gives `send(meanwhile=...)` its turn.
SLOW_REPLY_SECONDS = 0.02


class DeliveryError(Exception):
    """A send that did not succeed; `code` and `reply` are the server's words when it gave any."""

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply


class TransientError(DeliveryError):
    """Nothing was handed over; safe to try again later."""


class TLSError(TransientError):
    """The connection could not be secured (no STARTTLS offered, a bad certificate, a failed handshake)."""


class PermanentError(DeliveryError):
    """The server refused the message; trying again will not help."""


class DataSentNoAnswer(DeliveryError):
    """The data was handed over and no answer came back: the server may have the message."""


@dataclass
class SendResult:
    reply: str
    refused: dict[str, str] = field(default_factory=dict)  # recipients refused while others were taken


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------
def tls_context(verify: bool) -> ssl.SSLContext:
    """The system's trust store plus SMTP_CA_FILE and MAIL_CA_FILE; no verification only when the inbox opted out."""
    # SMTP_CA_FILE first, as the more specific of the two.
    return client_context(verify, [settings.SMTP_CA_FILE, settings.MAIL_CA_FILE])


class _Tracking:
    """Knows whether the message data has started to go out, and keeps the reply to it.

    smtplib's `data()` sends the DATA command as text, then the (dot-stuffed) message as bytes:
    the first bytes sent inside `data()` are the moment the server may start to have the message.
    """

    before_data: Callable[[], None] | None = None
    meanwhile: Callable[[], None] | None = None
    # The envelope whose MAIL, RCPT and DATA went out behind the previous message (see send's
    # `following`); their replies are still to be read.
    pending_envelope: tuple[str, tuple[str, ...]] | None = None
    awaiting_data = False
    replies: _Replies | None = None
    data_handed_over = False
    last_reply = ""
    _in_data = False

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        self._in_data = True
        try:
            code, reply = super().data(msg)  # type: ignore[misc]
        finally:
            self._in_data = False
        self.last_reply = f"{code} {reply.decode(errors='replace')}"
        return code, reply

    def send(self, s: bytes | str) -> None:
        if self._in_data and isinstance(s, bytes) and not self.data_handed_over:
            self.run_before_data()
            self.data_handed_over = True
        super().send(s)  # type: ignore[misc]

    def run_before_data(self) -> None:
        # The server has said 354 and waits for the data: should before_data fail, _close must
        # not send QUIT, which would be read as a line of it (a message cut off by a close is
        # dropped) while we waited for an answer that never comes.
        self.awaiting_data = True
        if self.before_data is not None:
            self.before_data()
        self.awaiting_data = False


class _SMTP(_Tracking, smtplib.SMTP):
    pass


class _SMTP_SSL(_Tracking, smtplib.SMTP_SSL):
    pass


def _connect(inbox: Inbox, timeout: float) -> smtplib.SMTP:
    host, port = inbox.smtp_host, inbox.smtp_port
    try:
        if inbox.smtp_security == Security.IMPLICIT_TLS:
            client: smtplib.SMTP = _SMTP_SSL(host, port, timeout=timeout,
                                             context=tls_context(inbox.smtp_verify_cert))
        else:
            client = _SMTP(host, port, timeout=timeout)
        client.ehlo()
        if inbox.smtp_security == Security.STARTTLS:
            if not client.has_extn("starttls"):
                client.close()
                raise TLSError(f"{host}:{port} does not offer STARTTLS; refusing to continue in plaintext.")
            client.starttls(context=tls_context(inbox.smtp_verify_cert))
            client.ehlo()
        _login(client, inbox)
    except DeliveryError:
        raise
    except Exception as exc:
        raise _classify(exc, handed_over=False) from exc
    return client


def _login(client: smtplib.SMTP, inbox: Inbox) -> None:
    if not inbox.smtp_username:
        return
    if inbox.auth_method in (AuthMethod.MICROSOFT, AuthMethod.GOOGLE):
        # XOAUTH2 with the access token the OAuth flow keeps fresh on the inbox.
        token = f"user={inbox.smtp_username}\x01auth=Bearer {inbox.oauth_access_token}\x01\x01"
        client.auth("XOAUTH2", lambda challenge=None: token, initial_response_ok=True)
    else:
        client.login(inbox.smtp_username, inbox.smtp_secret)


def _pool_key(inbox: Inbox) -> tuple[Any, ...]:
    # Any change to the inbox's outgoing settings gives a new key, so a stale connection is never used.
    secret = hashlib.sha256(f"{inbox.smtp_secret}\0{inbox.oauth_access_token}".encode()).hexdigest()
    return (inbox.pk, inbox.smtp_host, inbox.smtp_port, inbox.smtp_security, inbox.smtp_verify_cert,
            inbox.smtp_username, secret)


_pool: dict[tuple[Any, ...], tuple[smtplib.SMTP, float]] = {}


def _take_pooled(inbox: Inbox) -> smtplib.SMTP | None:
    entry = _pool.pop(_pool_key(inbox), None)
    if entry is None:
        return None
    client, last_used = entry
    if time.monotonic() - last_used > POOL_IDLE_SECONDS:
        _close(client)
        return None
    return client


def _close(client: smtplib.SMTP) -> None:
    try:
        # Where the server awaits a message's data, a QUIT would be read as part of it.
        if client.pending_envelope is None and not client.awaiting_data:
            client.quit()
    except Exception:  # noqa: S110 - closing a connection that may already be gone
        pass
    finally:
        client.close()


def drop_following(inbox: Inbox) -> None:
    """Close the inbox's kept connection if a following message's commands went out on it and it will not come.

    The server has answered DATA and waits for a message: closing is the only safe way out
    (a lone "." would deliver an empty one). A drain that stops early calls this.
    """
    entry = _pool.get(_pool_key(inbox))
    if entry is not None and entry[0].pending_envelope is not None:
        del _pool[_pool_key(inbox)]
        _close(entry[0])


def close_pool() -> None:
    """Close every kept connection (a worker shutting down, a test cleaning up)."""
    while _pool:
        _close(_pool.popitem()[1][0])


# ---------------------------------------------------------------------------
# Flattening: what smtplib's send_message does, without two costs of the stdlib's general case
# ---------------------------------------------------------------------------
class _Compat32(Compat32):
    """compat32, whose folding of a header that fits on its line is the header unchanged.

    compat32 folds every header through email.header.Header, ~50 µs each; for a single-line
    ASCII value within the line limit the result is `Name: value` as given (checked against
    the stdlib's folding in the tests), so that case skips it. Anything else folds as before.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and "\r" not in value and "\n" not in value
                and (not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length)):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


class _Generator(BytesGenerator):
    """A BytesGenerator whose multipart boundaries cost no regular expression.

    The stdlib compiles a new pattern per boundary to check the parts do not contain it. Here a
    boundary of 128 random bits, drawn after the parts are written, is checked against them
    as a plain substring (stricter than the stdlib's line match) and drawn again if found.
    As that check makes it safe, the bits come from `random`, as the stdlib's boundaries do,
    not from a system call to the kernel's generator each.
    """

    @classmethod
    def _make_boundary(cls, text: Any = None) -> str:
        while True:
            boundary = f"=_sb_{random.getrandbits(128):032x}"
            marker = "--" + boundary
            if text is None or (marker.encode() if isinstance(text, bytes) else marker) not in text:
                return boundary


def needs_smtputf8(envelope_from: str, recipients: Sequence[str]) -> bool:
    """Whether an address of the envelope is not ASCII: then smtplib's SMTPUTF8 path sends it."""
    return not "".join([envelope_from, *recipients]).isascii()


def flatten(message: MIMEMessage) -> bytes:
    """The bytes smtplib's send_message would send for an ASCII envelope: CRLF, without Bcc."""
    policy = message.policy
    if type(policy) is Compat32:
        policy = _Compat32().clone(**vars(policy))
    outgoing = copy.copy(message)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    with io.BytesIO() as buffer:
        _Generator(buffer, policy=policy).flatten(outgoing, linesep="\r\n")
        return buffer.getvalue()


# ---------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------
def send(inbox: Inbox, message: MIMEMessage | None, *, envelope_from: str, recipients: Sequence[str],
         before_data: Callable[[], None] | None = None, reuse: bool = False, data: bytes | None = None,
         meanwhile: Callable[[], None] | None = None, following: tuple[str, Sequence[str]] | None = None,
         ) -> SendResult:
    """Send `message` to exactly `recipients`, flattened (CRLF, without Bcc; smtplib dot-stuffs).

    `before_data` runs just before the first byte of the message data goes out. With `reuse`,
    the connection is kept for the next send from this process. `data`: `flatten(message)`,
    made beforehand (queue_reply composes it when the reply is queued); then `message` may be
    None, unless the envelope needs SMTPUTF8.
    `meanwhile` runs at most once, while the server is slow (SLOW_REPLY_SECONDS) to answer
    pipelined commands, or before a new connection or an exchange without PIPELINING.
    `following`: the envelope (sender, recipients) of the message the caller sends next on this
    kept connection. With PIPELINING its MAIL, RCPT and DATA go out right behind this message's
    data (RFC 2920 lets message content open a group), so each message costs one round trip;
    the next send() with that envelope reads their replies. A caller that will not send it
    calls drop_following().
    """
    if not recipients:
        raise PermanentError("No recipients.")
    timeout = float(settings.SMTP_TIMEOUT)
    meanwhile = _once(meanwhile) if meanwhile is not None else None
    client = _take_pooled(inbox) if reuse else None
    if client is not None and client.pending_envelope not in (None, (envelope_from, tuple(recipients))):
        _close(client)  # commands for another message went out on it
        client = None
    if client is not None:
        try:
            return _transaction(inbox, client, message, envelope_from, recipients, before_data, reuse, data,
                                meanwhile, following)
        except TransientError as exc:
            if getattr(exc, "stale_connection", False):
                client = None  # the kept connection had died; nothing was handed over, open a new one
            else:
                raise
    if meanwhile is not None:
        meanwhile()  # a new connection takes a few round trips
    client = _connect(inbox, timeout)
    return _transaction(inbox, client, message, envelope_from, recipients, before_data, reuse, data, meanwhile,
                        following)


def _once(function: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            function()
    return run


def _transaction(inbox: Inbox, client: smtplib.SMTP, message: MIMEMessage | None, envelope_from: str,
                 recipients: Sequence[str], before_data: Callable[[], None] | None, reuse: bool,
                 data: bytes | None, meanwhile: Callable[[], None] | None,
                 following: tuple[str, Sequence[str]] | None = None) -> SendResult:
    client.before_data = before_data
    client.meanwhile = meanwhile
    client.data_handed_over = False
    client.last_reply = ""
    try:
        if not needs_smtputf8(envelope_from, recipients):
            data = flatten(message) if data is None else data
            if client.has_extn("pipelining") and all(map(_PLAIN_ADDRESS.fullmatch, [envelope_from, *recipients])):
                if not (reuse and following and all(map(_PLAIN_ADDRESS.fullmatch, [following[0], *following[1]]))):
                    following = None
                refused = _sendmail_pipelined(client, envelope_from, recipients, data, following)
            else:
                _run_meanwhile(client)
                refused = client.sendmail(envelope_from, list(recipients), data)
        else:  # SMTPUTF8, which smtplib negotiates
            _run_meanwhile(client)
            refused = client.send_message(message, from_addr=envelope_from, to_addrs=list(recipients))
    except Exception as exc:
        error = _classify(exc, handed_over=client.data_handed_over)
        if isinstance(exc, smtplib.SMTPServerDisconnected) and not client.data_handed_over:
            error.stale_connection = True  # type: ignore[attr-defined]
        _close(client)
        raise error from exc
    result = SendResult(
        reply=client.last_reply,
        refused={address: f"{code} {text.decode(errors='replace')}" for address, (code, text) in refused.items()},
    )
    if reuse:
        _pool[_pool_key(inbox)] = (client, time.monotonic())
    else:
        _close(client)
    return result


# An address smtplib would send as `<address>` unchanged: no quoting, no spaces, no controls.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _sendmail_pipelined(client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], data: bytes,
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
        client.replies = _Replies(client)
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
            _run_meanwhile(client)  # the server is thinking (a slow RCPT check, a tarpit): use the time
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


def _run_meanwhile(client: smtplib.SMTP) -> None:
    meanwhile, client.meanwhile = client.meanwhile, None
    if meanwhile is not None:
        meanwhile()


class _Replies:
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


def _classify(exc: BaseException, *, handed_over: bool) -> DeliveryError:
    """Map smtplib's and the network's exceptions to the three kinds of failure."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = {addr: (code, text.decode(errors="replace")) for addr, (code, text) in exc.recipients.items()}
        words = "; ".join(f"{addr}: {code} {text}" for addr, (code, text) in replies.items())
        permanent = all(500 <= code < 600 for code, _ in replies.values())
        kind = PermanentError if permanent else TransientError
        return kind(f"Every recipient was refused: {words}", code=next(iter(replies.values()))[0], reply=words)
    if isinstance(exc, smtplib.SMTPResponseException):
        # A reply, even after the final dot, is a definite answer: no uncertainty.
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        reply = f"{exc.smtp_code} {text}"
        kind = PermanentError if 500 <= exc.smtp_code < 600 else TransientError
        return kind(f"The server answered {reply}", code=exc.smtp_code, reply=reply)
    if handed_over:
        return DataSentNoAnswer(f"No answer after the message data was sent ({type(exc).__name__}: {exc}).")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSError(f"TLS failed: {exc}")
    if isinstance(exc, OSError | smtplib.SMTPException):
        return TransientError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return TransientError(f"Unexpected {type(exc).__name__}: {exc}")


def check_login(inbox: Inbox) -> str:
    """Connect, secure and log in as the inbox would, then quit: for a settings check."""
    client = _connect(inbox, float(settings.SMTP_TIMEOUT))
    try:
        code, text = client.noop()
        return f"{code} {text.decode(errors='replace')}"
    finally:
        _close(client)


# ---------------------------------------------------------------------------
# Email services, through django-anymail
# ---------------------------------------------------------------------------
def send_anymail(inbox: Inbox, message: Any) -> SendResult:
    """Send a Django EmailMessage through the inbox's anymail backend; classify its errors alike."""
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused, AnymailRequestsAPIError
    from django.core.mail import get_connection
    from requests import ConnectionError as RequestsConnectionError
    from requests import Timeout

    try:
        connection = get_connection(inbox.anymail_backend, fail_silently=False)
        connection.send_messages([message])
    except AnymailRecipientsRefused as exc:
        raise PermanentError(f"The email service refused every recipient: {exc}") from exc
    except AnymailRequestsAPIError as exc:
        cause = exc.__cause__
        if isinstance(cause, Timeout) and not isinstance(cause, RequestsConnectionError):
            # The request went out; the service may have taken it.
            raise DataSentNoAnswer(f"No answer from the email service: {exc}") from exc
        if isinstance(cause, RequestsConnectionError) or exc.status_code is None or exc.status_code >= 500 \
                or exc.status_code == 429:
            raise TransientError(f"The email service is unavailable: {exc}", code=exc.status_code) from exc
        raise PermanentError(f"The email service refused the message: {exc}", code=exc.status_code,
                             reply=str(exc)) from exc
    except AnymailAPIError as exc:
        raise PermanentError(f"The email service refused the message: {exc}", reply=str(exc)) from exc
    status = getattr(message, "anymail_status", None)
    return SendResult(reply=f"accepted by {inbox.anymail_backend}: id {getattr(status, 'message_id', '') or '?'}")
