"""The quarantine of poison mail: a message that could not be parsed or stored is kept raw,
with the error in plain words, so one bad message never blocks an inbox."""

from __future__ import annotations

import hashlib
import traceback
from typing import Any

from django.core.files.base import ContentFile
from django.db import DataError, IntegrityError, transaction

from conversations.models import QuarantinedMessage, QuarantineStatus
from inboxes.mailformat.charsets import clean_text
from inboxes.models import Inbox


class PlainWordsError(Exception):
    """A refusal whose message is already written for a manager."""


def describe_error(error: BaseException) -> str:
    """What went wrong, for a manager reading the quarantine list."""
    if isinstance(error, DataError):
        return clean_text(f"The database refused a value taken from this message ({error}).")
    if isinstance(error, IntegrityError):
        return clean_text(f"Storing this message conflicted with data already stored ({error}).")
    if isinstance(error, PlainWordsError):
        return str(error)
    detail = clean_text(str(error)) or type(error).__name__
    return f"This message could not be read or stored: {detail}"[:2000]


def format_details(error: BaseException) -> str:
    """The traceback, safe to store (an error may quote the hostile bytes it choked on)."""
    return clean_text("".join(traceback.format_exception(error)))


def quarantine_message(
    inbox: Inbox,
    raw: bytes,
    error: BaseException,
    *,
    imap_folder: str = "",
    imap_uidvalidity: int | None = None,
    imap_uid: int | None = None,
    size: int | None = None,
) -> QuarantinedMessage:
    """Keep `raw` with the error. Idempotent: per (inbox, folder, UIDVALIDITY, UID) for mail
    from IMAP, per (inbox, SHA-256) for held mail from other sources (import_mail)."""
    sha256 = hashlib.sha256(raw).hexdigest()
    lookup: dict[str, Any] = (
        {"imap_folder": imap_folder, "imap_uidvalidity": imap_uidvalidity, "imap_uid": imap_uid}
        if imap_uid is not None
        else {"imap_uid": None, "raw_sha256": sha256, "status": QuarantineStatus.HELD}
    )
    existing = QuarantinedMessage.objects.filter(inbox=inbox, **lookup).first()
    if existing is not None:
        return existing
    row = QuarantinedMessage(
        inbox=inbox,
        raw_sha256=sha256,
        raw_size=size or len(raw),
        error=describe_error(error),
        details=format_details(error),
        imap_folder=imap_folder,
        imap_uidvalidity=imap_uidvalidity,
        imap_uid=imap_uid,
    )
    try:
        with transaction.atomic():
            row.raw.save("quarantined.eml", ContentFile(raw), save=False)
            row.save()
    except IntegrityError:
        # Another process quarantined the same UID first: theirs is the row.
        row.raw.delete(save=False)
        return QuarantinedMessage.objects.get(inbox=inbox, **lookup)
    return row
