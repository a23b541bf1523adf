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

import hashlib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message as MIMEMessage
from typing import Any

from django.conf import settings

from inboxes.models import AuthMethod, Inbox, Security
from inboxes.smtp_flatten import flatten, needs_smtputf8
from inboxes.smtp_pipelining import PLAIN_ADDRESS, Replies, run_meanwhile, sendmail_pipelined
from inboxes.tls import client_context, smtp_context

# A reused connection idle longer than this is replaced: servers drop idle clients (RFC 5321
# allows 5 minutes, many cut sooner) and a dead socket would cost a failed attempt.
POOL_IDLE_SECONDS = 20.0


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


class AuthenticationError(PermanentError):
    """The server refused the inbox's login, or requires one: no message goes until the settings are fixed.

    Permanent for the attempt, not for the message: a sender keeps its messages queued.
    """


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
    replies: Replies | None = None
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
        client = _greeted(inbox, timeout)
        client.ehlo()
        if inbox.smtp_security == Security.STARTTLS:
            if not client.has_extn("starttls"):
                client.close()
                raise TLSError(f"{host}:{port} does not offer STARTTLS; refusing to continue in plaintext.")
            client.starttls(context=smtp_context(inbox))
            client.ehlo()
        _login(client, inbox)
    except DeliveryError:
        raise
    except Exception as exc:
        raise _classify(exc, handed_over=False) from exc
    return client


def _greeted(inbox: Inbox, timeout: float) -> smtplib.SMTP:
    """A connection over which the server's greeting arrived; a silent or garbled one is named plainly.

    A port that speaks the other TLS mode fails in a way that says nothing by itself: an
    implicit-TLS server (465) waits in silence for a handshake a STARTTLS client never starts,
    and a plain-text greeting (587, 25) is no TLS record to an implicit-TLS client.
    """
    host, port = inbox.smtp_host, inbox.smtp_port
    implicit = inbox.smtp_security == Security.IMPLICIT_TLS
    try:
        if implicit:
            return _SMTP_SSL(host, port, timeout=timeout, context=smtp_context(inbox))
        return _SMTP(host, port, timeout=timeout)
    except ssl.SSLError as exc:
        if implicit and _speaks_plain_text(host, port, timeout):
            raise TLSError(f"{host}:{port} answered in plain text, not TLS: the port speaks STARTTLS or plain SMTP "
                           "(as 587 and 25 usually do), but the inbox is set to implicit TLS. Choose STARTTLS, "
                           f"or the server's implicit-TLS port (usually 465). ({exc})") from exc
        raise
    except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
        if not implicit and "timed out" in str(exc) and _speaks_tls(host, port, timeout):
            raise TLSError(f"{host}:{port} sent no greeting within {timeout:g} s and answers a TLS handshake: the port "
                           "speaks implicit TLS (as 465 usually does), but the inbox is set to "
                           f"{inbox.get_smtp_security_display()}. Choose implicit TLS, or the server's STARTTLS "
                           "port (usually 587).") from exc
        raise


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether host:port completes a TLS handshake; its certificate unchecked, only the protocol is asked."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10.0)) as sock, \
                context.wrap_socket(sock, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _speaks_plain_text(host: str, port: int, timeout: float) -> bool:
    """Whether host:port greets in plain text, as SMTP does before STARTTLS ("220 ...")."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10.0)) as sock:
            return sock.recv(4).startswith(b"220")
    except OSError:
        return False


def _login(client: smtplib.SMTP, inbox: Inbox) -> None:
    if not inbox.smtp_username:
        return
    try:
        if inbox.auth_method in (AuthMethod.MICROSOFT, AuthMethod.GOOGLE):
            # XOAUTH2 with the access token the OAuth flow keeps fresh on the inbox. A refusal comes as a
            # challenge holding the error, to be answered with an empty line (then 535).
            token = f"user={inbox.smtp_username}\x01auth=Bearer {inbox.oauth_access_token}\x01\x01"
            client.auth("XOAUTH2", lambda challenge=None: token if challenge is None else "",
                        initial_response_ok=True)
        else:
            client.login(inbox.smtp_username, inbox.smtp_secret)
    except smtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.smtp_code < 500:  # 454: the server's own trouble; try again later
            raise
        reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        raise AuthenticationError(
            f"{inbox.smtp_host}:{inbox.smtp_port} refused the login for {inbox.smtp_username!r} ({reply}). "
            "Check the inbox's SMTP username and password (or its authorization); replies wait in the queue "
            "until the login works.", code=exc.smtp_code, reply=reply) from exc
    except smtplib.SMTPException as exc:  # no AUTH offered, or no mechanism in common
        raise AuthenticationError(
            f"Could not log in to {inbox.smtp_host}:{inbox.smtp_port} as {inbox.smtp_username!r}: {exc}. "
            "Check the inbox's SMTP settings; replies wait in the queue until the login works.") from exc


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


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
# Sending
# ---------------------------------------------------------------------------
def send(inbox: Inbox, message: MIMEMessage | None, *, envelope_from: str, recipients: Sequence[str],
         before_data: Callable[[], None] | None = None, reuse: bool = False, data: bytes | None = None,
         meanwhile: Callable[[], None] | None = None, following: tuple[str, Sequence[str]] | None = None,
         ) -> SendResult:
    """Send `message` to exactly `recipients`, flattened (CRLF, without Bcc; smtplib dot-stuffs).

    `before_data` runs just before the first byte of the message data goes out. With `reuse`,
    the connection is kept for the next send from this process. `data`: the bytes to send,
    made beforehand (queue_reply composes them when the reply is queued); then `message` may
    be None. Without `data`, `message` is flattened here.
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
            if client.has_extn("pipelining") and all(map(PLAIN_ADDRESS.fullmatch, [envelope_from, *recipients])):
                if not (reuse and following and all(map(PLAIN_ADDRESS.fullmatch, [following[0], *following[1]]))):
                    following = None
                refused = sendmail_pipelined(client, envelope_from, recipients, data, following)
            else:
                run_meanwhile(client)
                refused = client.sendmail(envelope_from, list(recipients), data)
        else:
            run_meanwhile(client)
            refused = _sendmail_smtputf8(client, envelope_from, recipients, data, message)
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


def _sendmail_smtputf8(client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], data: bytes | None,
                       message: MIMEMessage | None) -> dict[str, tuple[int, bytes]]:
    """Send to an envelope with a non-ASCII address (RFC 6531): the same bytes, with SMTPUTF8 on MAIL."""
    if not client.has_extn("smtputf8"):
        raise smtplib.SMTPNotSupportedError(
            "An address of the envelope is not ASCII, and the server does not offer SMTPUTF8.")
    if data is None:
        data = flatten(message, utf8=True)
    return client.sendmail(envelope_from, list(recipients), data, mail_options=["SMTPUTF8", "BODY=8BITMIME"])


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
        reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code == 530:  # RFC 4954: authentication required (or, with some servers, TLS first)
            return AuthenticationError(f"The server requires a login before it takes mail ({reply}). Set the "
                                       "inbox's SMTP username and password; replies wait in the queue until then.",
                                       code=530, reply=reply)
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
