"""The TLS client context both mail transports use: the system's trust store, the site's CA file,
and the one certificate a manager trusted for an inbox.

Trusting a certificate for an inbox keeps verification on: the certificate becomes a trust
anchor for that inbox's connections only, the host name is still checked, and a server that
later presents another certificate fails with `CertificateChanged`, which says so.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings


class _InboxTLS(Protocol):
    imap_verify_cert: bool
    imap_trusted_certificate: str
    smtp_verify_cert: bool
    smtp_trusted_certificate: str


def site_ca_files() -> list[str]:
    """MAIL_CA_FILE, and SMTP_CA_FILE, its old name for outgoing mail, while it is still set."""
    return [name for name in (settings.MAIL_CA_FILE, getattr(settings, "SMTP_CA_FILE", "")) if name]


def client_context(verify: bool, ca_files: Iterable[str] = (), *, trusted: str = "") -> ssl.SSLContext:
    """Verify against the system store, the site's CA files, `ca_files` and the `trusted` PEM certificate.

    Checks are skipped only when `verify` is false (an inbox that opted out).
    """
    context = ssl.create_default_context()
    for ca_file in dict.fromkeys([*(name for name in ca_files if name), *site_ca_files()]):
        context.load_verify_locations(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if trusted.strip():
        context.load_verify_locations(cadata=trusted)
        # The trusted certificate is usually a server's own (signed by a private CA we do not
        # have): a partial chain lets it anchor the verification by itself.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.sslsocket_class = _PinnedSocket
        context.trusted_fingerprint = fingerprint(ssl.PEM_cert_to_DER_cert(trusted.strip()))
    return context


def imap_context(inbox: _InboxTLS) -> ssl.SSLContext:
    """The context for the inbox's IMAP connections (polling and the Sent copy)."""
    return client_context(inbox.imap_verify_cert, trusted=inbox.imap_trusted_certificate)


def smtp_context(inbox: _InboxTLS) -> ssl.SSLContext:
    """The context for the inbox's SMTP connections."""
    return client_context(inbox.smtp_verify_cert, trusted=inbox.smtp_trusted_certificate)


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated hex pairs, as browsers and openssl show it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[index:index + 2] for index in range(0, len(digest), 2))


class CertificateChanged(ssl.SSLCertVerificationError):
    """The server no longer presents the certificate that was trusted for this inbox."""

    def __init__(self, trusted_fingerprint: str, cause: ssl.SSLCertVerificationError) -> None:
        message = (
            "the server's certificate changed since it was trusted for this inbox (the trusted one has "
            f"SHA-256 fingerprint {trusted_fingerprint}); if the change is expected, run Test connection "
            "and trust the new certificate, otherwise someone may be intercepting the connection"
        )
        super().__init__(cause.errno or 1, message)
        self.verify_code = cause.verify_code
        self.verify_message = message
        self.reason = "CERTIFICATE_CHANGED"
        self.library = "SSL"

    def __str__(self) -> str:
        return self.verify_message


class _PinnedSocket(ssl.SSLSocket):
    """An SSL socket whose failed verification says the trusted certificate changed."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except ssl.SSLCertVerificationError as error:
            if error.verify_code in _NOT_A_CHANGE:
                raise
            raise CertificateChanged(self.context.trusted_fingerprint, error) from error


# OpenSSL's codes for failures that are not another certificate: the trusted one expired, or
# the host name (62) or address (64) is not one it names.
_NOT_A_CHANGE = frozenset({10, 62, 64})
