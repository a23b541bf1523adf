"""Our own Message-IDs carry a signed conversation token, so replies thread back to us
even when a mail client drops In-Reply-To and References."""

from __future__ import annotations

import secrets
import uuid

from django.core import signing

_SALT = "switchboard.message-id"
_PREFIX = "sb"


def _signer() -> signing.Signer:
    # "." separates the parts: ":" (Django's default) is not allowed in a Message-ID's left part.
    return signing.Signer(salt=_SALT, sep=".", algorithm="sha256")


def make_message_id(conversation_public_id: uuid.UUID, domain: str) -> str:
    """A new RFC 5322 Message-ID (without angle brackets) that names the conversation."""
    value = f"{_PREFIX}.{conversation_public_id.hex}.{secrets.token_hex(6)}"
    return f"{_signer().sign(value)}@{domain}"


def conversation_from_message_id(message_id: str) -> uuid.UUID | None:
    """The conversation a Message-ID of ours names, or None when it is not ours or is forged."""
    left = message_id.strip().strip("<>").rpartition("@")[0]
    if not left.startswith(_PREFIX + "."):
        return None
    try:
        value = _signer().unsign(left)
    except signing.BadSignature:
        return None
    parts = value.split(".")
    if len(parts) != 3:
        return None
    try:
        return uuid.UUID(hex=parts[1])
    except ValueError:
        return None
