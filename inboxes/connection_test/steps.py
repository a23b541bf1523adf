"""A connection test's steps: each timed, each a plain result; the network steps IMAP and SMTP share."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from inboxes import tls

# What the server says is shown at most this long: enough to recognise a refusal, no banners.
SERVER_WORDS_LIMIT = 160


@dataclass
class Step:
    """One step's result, as plain data: what the manager sees, and what the API returns."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    advice: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepFailed(Exception):
    """A step that failed: what happened, what to do, and anything to show (a certificate, folders)."""

    def __init__(self, detail: str, advice: str = "", **data: Any) -> None:
        super().__init__(detail)
        self.detail, self.advice, self.data = detail, advice, data


class Recorder:
    """Runs steps in order, timing each, and stops at the first that fails."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.steps: list[Step] = []
        self.failed = False

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        result = Step(f"{self.prefix}: {name}", ok=True, seconds=0.0)
        started = time.monotonic()
        try:
            yield result
        except StepFailed as failure:
            result.ok, result.detail, result.advice = False, failure.detail, failure.advice
            result.data.update(failure.data)
            self.failed = True
        finally:
            result.seconds = round(time.monotonic() - started, 3)
            self.steps.append(result)


def server_words(raw: object) -> str:
    """A server's answer as short printable text: enough to recognise it, never a whole banner."""
    if isinstance(raw, list | tuple):
        raw = b" ".join(item if isinstance(item, bytes) else str(item).encode() for item in raw if item)
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    text = "".join(char if char.isprintable() else " " for char in text).strip()
    return text if len(text) <= SERVER_WORDS_LIMIT else text[:SERVER_WORDS_LIMIT] + "…"


def resolve(host: str, port: int) -> list[str]:
    if not host:
        raise StepFailed("No host is set.", "Fill in the host, or pick your provider's preset.")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise StepFailed(
            f"The name {host} could not be found ({getattr(error, 'strerror', None) or error}).",
            "Check the spelling of the host name; your provider's preset has the right one.",
        ) from error
    return list(dict.fromkeys(address[4][0] for address in found))


def connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError as error:
        raise StepFailed(f"{host} refused the connection on port {port}: nothing listens there.",
                         "Check the port: it is usually 993 (implicit TLS) or 143 (STARTTLS) for IMAP, "
                         "465 (implicit TLS) or 587 (STARTTLS) for SMTP.") from error
    except TimeoutError as error:
        raise StepFailed(f"No answer from {host} on port {port} within {timeout:g} seconds.",
                         "Check the host and port; a firewall may block the port on the way.") from error
    except OSError as error:
        raise StepFailed(f"Could not connect to {host} on port {port} ({error.strerror or error}).",
                         "Check the host and port, and that this server can reach the internet.") from error


def handshake(sock: socket.socket, host: str, context: ssl.SSLContext, timeout: float, *,
              starttls: str = "") -> ssl.SSLSocket:
    """TLS over `sock`, verified by `context`; failures explained, with the certificate when it is untrusted.

    `starttls` ("imap", "smtp") says how the connection got to its handshake, so that the
    certificate can be fetched again to be shown.
    """
    sock.settimeout(timeout)
    peer = sock.getpeername()[:2]  # a failed handshake closes the socket
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except tls.CertificateChanged as error:
        raise StepFailed(
            "The server's certificate changed since it was trusted for this inbox.",
            "If your administrator replaced the certificate, compare the new fingerprint below with theirs and "
            "trust it; otherwise do not: someone may be intercepting the connection.",
            certificate=describe_unverified(host, peer, timeout, starttls), changed=True,
        ) from error
    except ssl.SSLCertVerificationError as error:
        raise _untrusted(host, describe_unverified(host, peer, timeout, starttls), error) from error
    except ssl.SSLError as error:
        raise StepFailed(
            f"The TLS handshake failed ({error.reason or error}).",
            "The port and the security setting probably do not match: a plain or STARTTLS port (143, 587, 25) "
            "answers in plain text, not TLS. Choose STARTTLS for it, or the implicit-TLS port (993 for IMAP, "
            "465 for SMTP).") from error
    except TimeoutError as error:
        raise StepFailed(f"The TLS handshake got no answer within {timeout:g} seconds.",
                         "Check that this port uses implicit TLS; otherwise choose STARTTLS.") from error
    except OSError as error:
        raise StepFailed(f"The connection closed during the TLS handshake ({error}).",
                         "Check that this port uses implicit TLS; otherwise choose STARTTLS.") from error


def certificate_detail(sock: ssl.SSLSocket, host: str) -> tuple[str, dict[str, Any]]:
    """What the verified certificate says: for whom, by whom, until when."""
    info = describe(sock.getpeercert(binary_form=True) or b"")
    expires = dt.datetime.fromisoformat(info["not_after"])
    days = (expires - dt.datetime.now(dt.UTC)).days
    detail = (f"Verified {sock.version()}: issued to {info['subject']} by {info['issuer']}, valid until "
              f"{expires:%Y-%m-%d} ({days} days), matches {host}.")
    return detail, {"certificate": info}


def describe(der: bytes) -> dict[str, Any]:
    """A certificate as plain data: subject, issuer, names, validity, SHA-256 fingerprint and the PEM."""
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt_names = [str(name) for name in names.get_values_for_type(x509.DNSName)]
        alt_names += [str(address) for address in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        alt_names = []
    return {
        "subject": certificate.subject.rfc4514_string(), "issuer": certificate.issuer.rfc4514_string(),
        "names": alt_names, "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(), "fingerprint": tls.fingerprint(der),
        "pem": ssl.DER_cert_to_PEM_cert(der),
    }


def _untrusted(host: str, certificate: dict[str, Any], error: ssl.SSLCertVerificationError) -> StepFailed:
    code = error.verify_code
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return StepFailed(f"The server's certificate expired on {certificate.get('not_after', '?')[:10]}.",
                          "The server's administrator must renew the certificate; until then mail cannot be "
                          "read safely.", certificate=certificate)
    if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        names = ", ".join(certificate.get("names") or [certificate.get("subject", "?")])
        return StepFailed(f"The server's certificate is for {names}, not for {host}.",
                          f"Use a host name the certificate names ({names}) instead of {host}.",
                          certificate=certificate)
    return StepFailed(
        f"The server's certificate is not signed by an authority Switchboard trusts ({error.verify_message}).",
        "It is self-signed or from a private authority. If this is your organisation's server, compare the "
        "fingerprint below with the one your administrator gives you, then trust this certificate for this "
        "inbox: verification stays on, and a different certificate later is refused.",
        certificate=certificate, can_trust=True)


def describe_unverified(host: str, peer: tuple[str, int], timeout: float, starttls: str) -> dict[str, Any]:
    """Fetch the certificate again without verifying it, only to show it (nothing is sent over it)."""
    opener = _REOPENERS.get(starttls, _plain_reopen)
    try:
        with socket.create_connection(peer, timeout=timeout) as raw:
            opener(raw)
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with context.wrap_socket(raw, server_hostname=host) as secured:
                return describe(secured.getpeercert(binary_form=True) or b"")
    except (OSError, ValueError):
        return {}


def _plain_reopen(sock: socket.socket) -> None:
    """Implicit TLS: the handshake starts at once."""


def _imap_reopen(sock: socket.socket) -> None:
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b"a STARTTLS\r\n")
    while not reader.readline().startswith(b"a "):
        pass


def _smtp_reopen(sock: socket.socket) -> None:
    reader = sock.makefile("rb")
    _smtp_reply(reader)
    sock.sendall(b"EHLO switchboard.invalid\r\n")
    _smtp_reply(reader)
    sock.sendall(b"STARTTLS\r\n")
    _smtp_reply(reader)


def _smtp_reply(reader: Any) -> None:
    while (line := reader.readline()) and line[3:4] == b"-":
        pass


_REOPENERS: dict[str, Callable[[socket.socket], None]] = {"imap": _imap_reopen, "smtp": _smtp_reopen}
