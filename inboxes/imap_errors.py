"""What can go wrong talking to an IMAP server, in plain words, and which failures are passing.

A refused login, a TLS problem, a missing STARTTLS or folder is something a manager must fix:
it shows on the inbox. A network error or a timeout is usually a blip: polls back off quietly.
A server that says it is throttling us (its limits, not our password) is its own case: polls
pause for minutes, and the inbox says why.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Iterator
from enum import StrEnum

from imap_tools.errors import MailboxLoginError, UnexpectedCommandStatusError


class ErrorKind(StrEnum):
    AUTH = "auth"
    TLS = "tls"
    STARTTLS_MISSING = "starttls_missing"
    FOLDER_MISSING = "folder_missing"
    UNSUPPORTED = "unsupported"
    NETWORK = "network"
    PROTOCOL = "protocol"
    THROTTLED = "throttled"
    TOO_LARGE = "too_large"


# Passing trouble: retried with backoff, never shown as a broken inbox.
TRANSIENT = frozenset({ErrorKind.NETWORK, ErrorKind.PROTOCOL, ErrorKind.THROTTLED})

# Response codes that always mean "you are over a limit" (Gmail, Outlook, Yahoo use them).
_THROTTLE_CODE = re.compile(r"\[(THROTTLED|LIMIT)\b", re.IGNORECASE)
# Codes whose text decides: an [ALERT], a BYE or an [UNAVAILABLE] about limits or load.
_OVERLOAD_WORDS = re.compile(
    r"bandwidth|too many|rate.?limit|exceeded|throttl|overload|slow down|try again later", re.IGNORECASE)
# A storage quota or a refused password is never throttling, whatever else the text says.
_NOT_THROTTLING = re.compile(r"\[(OVERQUOTA|AUTHENTICATIONFAILED|AUTHORIZATIONFAILED)\b|quota", re.IGNORECASE)


class ImapError(Exception):
    """A failed step, with a message a manager can act on."""

    def __init__(self, kind: ErrorKind, step: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.step = step
        self.message = message

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT

    def __str__(self) -> str:
        return f"Could not {self.step}: {self.message}"


@contextlib.contextmanager
def classify(step: str, **context: str) -> Iterator[None]:
    """Turn the exceptions of imaplib, ssl and sockets raised in this block into ImapError."""
    where = " ".join(f"{value}" for value in context.values() if value)
    try:
        yield
    except ImapError:
        raise
    except ResponseTooLarge as error:
        raise ImapError(ErrorKind.TOO_LARGE, step, str(error)) from error
    except (MailboxLoginError, UnexpectedCommandStatusError, imaplib.IMAP4.error) as error:
        if is_throttling(words := _server_words(error)):
            raise throttled(step, words) from error
        if isinstance(error, MailboxLoginError) and "[UNAVAILABLE]" in words.upper():
            # RFC 5530: the server's own back end is down; the password may well be right.
            raise ImapError(ErrorKind.PROTOCOL, step, f"The server could not check the login just now "
                            f"({words}). Switchboard will try again shortly.") from error
        if isinstance(error, MailboxLoginError):
            raise _login_refused(step, where, words) from error
        if isinstance(error, imaplib.IMAP4.abort):
            raise _connection_failed(step, where, error) from error
        raise ImapError(ErrorKind.PROTOCOL, step, f"The server said: {words}.") from error
    except ssl.SSLCertVerificationError as error:
        raise ImapError(
            ErrorKind.TLS, step,
            f"The server's certificate could not be verified ({error.verify_message}). Check the host "
            "name; if the server uses a certificate of its own, run Test connection on the inbox's page "
            "and trust that certificate for this inbox (verification stays on).",
        ) from error
    except ssl.SSLError as error:
        raise ImapError(
            ErrorKind.TLS, step,
            f"The secure (TLS) connection failed ({error.reason or error}). Check that the port matches "
            "the security mode: implicit TLS is usually 993, STARTTLS 143.",
        ) from error
    except TimeoutError as error:
        raise ImapError(
            ErrorKind.NETWORK, step,
            f"The server{f' {where}' if where else ''} did not answer in time. Switchboard will try "
            "again shortly.",
        ) from error
    except (OSError, EOFError) as error:
        raise _connection_failed(step, where, error) from error


class ResponseTooLarge(Exception):
    """The server announced or sent more than the connection accepts; nothing more was read.

    Not an imaplib error on purpose: imaplib re-wraps its own errors into plain text, and this
    one must reach `classify` as itself.
    """


def is_throttling(words: str) -> bool:
    """Whether a server's answer says we are over its limits (rather than wrong or broken)."""
    if _NOT_THROTTLING.search(words):
        return False
    return bool(_THROTTLE_CODE.search(words) or _OVERLOAD_WORDS.search(words))


def throttled(step: str, words: str) -> ImapError:
    return ImapError(
        ErrorKind.THROTTLED, step,
        f"The server is limiting this account ({words}). Switchboard pauses this inbox for a few "
        "minutes and then tries again by itself; nothing needs changing unless it keeps happening "
        "(then another program may be using up the account's limits).",
    )


def refused(step: str, words: str) -> ImapError:
    """A command the server answered with NO or BAD: throttling, or else a protocol failure."""
    return throttled(step, words) if is_throttling(words) else ImapError(
        ErrorKind.PROTOCOL, step, f"The server said: {words}.")


def _login_refused(step: str, where: str, words: str) -> ImapError:
    return ImapError(
        ErrorKind.AUTH, step,
        f"The server refused the login{f' for {where}' if where else ''} ({words}). Check the username "
        "and password; some providers need an app password when two-step sign-in is on.",
    )


def _connection_failed(step: str, where: str, error: Exception) -> ImapError:
    return ImapError(
        ErrorKind.NETWORK, step,
        f"The connection{f' to {where}' if where else ''} failed ({error}). Check the host and port; "
        "Switchboard will try again shortly.",
    )


def _server_words(error: Exception) -> str:
    result = getattr(error, "command_result", None)
    if result and len(result) > 1:
        data = result[1]
        parts = [item.decode(errors="replace") if isinstance(item, bytes) else str(item)
                 for item in (data if isinstance(data, list | tuple) else [data]) if item]
        return " ".join(parts) or str(result[0])
    if error.args and isinstance(error.args[0], bytes):
        return error.args[0].decode(errors="replace")  # imaplib raises the greeting's bytes
    return str(error)
