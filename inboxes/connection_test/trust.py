"""Trust the certificate a server presents, for one inbox: what the manager saw is what is stored."""

from __future__ import annotations

import socket
import ssl

from django.conf import settings
from django.utils import timezone

from inboxes.connection_test.steps import StepFailed, describe_unverified
from inboxes.history import record_inbox_change
from inboxes.models import Inbox, Security

SIDES = ("imap", "smtp")


def trust_certificate(inbox: Inbox, side: str, fingerprint: str, user: object | None = None) -> dict[str, object]:
    """Fetch the certificate the `side` ("imap" or "smtp") server presents now and trust it for the inbox.

    It is stored only when its SHA-256 fingerprint is the one the manager was shown, so a
    certificate swapped in between is never trusted. Returns the certificate's description.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    host, port, security = (getattr(inbox, f"{side}_{name}") for name in ("host", "port", "security"))
    if security == Security.NONE:
        raise StepFailed("This connection does not use TLS, so there is no certificate to trust.")
    try:
        peer = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2]
    except (OSError, UnicodeError) as error:
        raise StepFailed(f"The name {host} could not be found.") from error
    timeout = float(settings.IMAP_TIMEOUT if side == "imap" else settings.SMTP_TIMEOUT)
    certificate = describe_unverified(host, peer, timeout, side if security == Security.STARTTLS else "")
    if not certificate:
        raise StepFailed(f"Could not fetch the certificate from {host} port {port}.")
    if _normal(certificate["fingerprint"]) != _normal(fingerprint):
        raise StepFailed(
            f"The server now presents a different certificate (SHA-256 {certificate['fingerprint']}) from the one "
            "you were shown; nothing was trusted.", "Run Test connection again and compare the fingerprint.")
    field = f"{side}_trusted_certificate"
    setattr(inbox, field, ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(certificate["pem"])))
    fields = [field, "updated_at"]
    if side == "imap":  # the poll that failed on it need not wait out its backoff
        inbox.consecutive_failures, inbox.next_poll_at = 0, timezone.now()
        fields += ["consecutive_failures", "next_poll_at"]
    inbox.save(update_fields=fields)
    record_inbox_change(inbox, user, f"trusted the {side.upper()} certificate", [field])
    return certificate


def _normal(fingerprint: str) -> str:
    return fingerprint.replace(":", "").replace(" ", "").upper()
