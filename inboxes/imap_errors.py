"""What can go wrong talking to an IMAP server, in plain words, and which failures are passing.

A refused login, a TLS problem, a missing STARTTLS or folder is something a manager must fix:
it shows on the inbox. A network error or a timeout is usually a blip: polls back off quietly.
"""

from __future__ import annotations

import contextlib
import imaplib
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


# Passing trouble: retried with backoff, shown only as "last error", never as a broken inbox.
TRANSIENT = frozenset({ErrorKind.NETWORK, ErrorKind.PROTOCOL})


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
    except MailboxLoginError as error:
        raise ImapError(
            ErrorKind.AUTH, step,
            f"The server refused the login{f' for {where}' if where else ''} "
            f"({_server_words(error)}). Check the username and password; some providers need an "
            "app password when two-step sign-in is on.",
        ) from error
    except ssl.SSLCertVerificationError as error:
        raise ImapError(
            ErrorKind.TLS, step,
            f"The server's certificate could not be verified ({error.verify_message}). Check the host "
            "name; if the server uses a self-signed certificate you trust, turn off certificate "
            "verification for this inbox.",
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
    except (OSError, EOFError, imaplib.IMAP4.abort) as error:
        raise ImapError(
            ErrorKind.NETWORK, step,
            f"The connection{f' to {where}' if where else ''} failed ({error}). Check the host and port; "
            "Switchboard will try again shortly.",
        ) from error
    except (imaplib.IMAP4.error, UnexpectedCommandStatusError) as error:
        raise ImapError(ErrorKind.PROTOCOL, step, f"The server said: {_server_words(error)}.") from error


def _server_words(error: Exception) -> str:
    result = getattr(error, "command_result", None)
    if result and len(result) > 1:
        data = result[1]
        parts = [item.decode(errors="replace") if isinstance(item, bytes) else str(item)
                 for item in (data if isinstance(data, list | tuple) else [data]) if item]
        return " ".join(parts) or str(result[0])
    return str(error)
