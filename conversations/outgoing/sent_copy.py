"""The copy of a sent reply in the mailbox's Sent folder: an IMAP APPEND of the stored bytes, retried with a backoff.

Saving the copy is its own job, after the reply has left: a failed APPEND is tried again later
(`retry_sent_copies`, from beat), never by sending the reply again. A message says where its
copy stands in `sent_copy_status`: pending (to be saved, or tried again at
`sent_copy_next_attempt_at`), stored, or failed after SENT_COPY_MAX_ATTEMPTS; each attempt is
in the delivery history.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.conf import settings
from django.utils import timezone

from conversations.models import DeliveryStatus, Message, SentCopyStatus
from conversations.outgoing.compose import stored_bytes

logger = logging.getLogger(__name__)

# An attempt in progress holds the copy this long: past it, a worker that died mid-APPEND has
# its copy tried again (at worst a second copy in Sent; never a second email).
LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF_SECONDS = 6 * 3600


def pending(now: dt.datetime) -> dict[str, Any]:
    """The fields that put a copy in line, written with the reply's "sent" so that a crash cannot lose it."""
    return {"sent_copy_status": SentCopyStatus.PENDING, "sent_copy_next_attempt_at": now + LEASE}


def save_sent_copy(message: Message) -> str:
    """Try to store the copy of `message` (sent, with its inbox loaded) now; its new sent_copy_status."""
    inbox = message.inbox
    attempts = message.sent_copy_attempts + 1
    try:
        from inboxes import imap

        imap.append(inbox, inbox.sent_folder, stored_bytes(message), ("\\Seen",))
    except Exception as exc:
        logger.warning("Could not save message %s to %s: %s", message.pk, inbox.sent_folder, exc)
        return _not_saved(message, attempts, f"could not save to {inbox.sent_folder}: {type(exc).__name__}: {exc}")
    _record(message, f"saved to {inbox.sent_folder}", sent_copy_status=SentCopyStatus.STORED,
            sent_copy_attempts=attempts, sent_copy_next_attempt_at=None, sent_copy_error="")
    return SentCopyStatus.STORED


def _not_saved(message: Message, attempts: int, detail: str) -> str:
    if attempts >= int(settings.SENT_COPY_MAX_ATTEMPTS):
        _record(message, f"{detail}; gave up after {attempts} attempts", sent_copy_status=SentCopyStatus.FAILED,
                sent_copy_attempts=attempts, sent_copy_next_attempt_at=None, sent_copy_error=detail)
        return SentCopyStatus.FAILED
    retry_at = timezone.now() + dt.timedelta(seconds=backoff_seconds(attempts))
    _record(message, f"{detail} (will try again at {retry_at:%H:%M:%S} UTC)", sent_copy_status=SentCopyStatus.PENDING,
            sent_copy_attempts=attempts, sent_copy_next_attempt_at=retry_at, sent_copy_error=detail)
    return SentCopyStatus.PENDING


def backoff_seconds(attempt: int) -> float:
    """Exponential from SENT_COPY_RETRY_BASE_SECONDS, capped, with jitter: a folder is rarely fixed in seconds."""
    delay = min(MAX_BACKOFF_SECONDS, float(settings.SENT_COPY_RETRY_BASE_SECONDS) * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.75, 1.25)


def _record(message: Message, detail: str, **fields: Any) -> None:
    now = timezone.now()
    entry = {"at": now.isoformat(), "from": DeliveryStatus.SENT, "to": DeliveryStatus.SENT, "detail": detail[:2000]}
    current = Message.objects.filter(pk=message.pk).values_list("delivery_history", flat=True).first() or []
    Message.objects.filter(pk=message.pk).update(delivery_history=[*current, entry], **fields)
    for name, value in fields.items():
        setattr(message, name, value)


def retry_sent_copies(*, now: dt.datetime | None = None, limit: int = 50) -> list[int]:
    """Try again the copies whose time has come; the ids of the messages tried. Harmless to run twice at once."""
    now = now or timezone.now()
    due = list(Message.objects.select_related("inbox").filter(
        sent_copy_status=SentCopyStatus.PENDING, sent_copy_next_attempt_at__lte=now,
    ).order_by("sent_copy_next_attempt_at", "id")[:limit])
    tried = []
    for message in due:
        # The claim: one worker per copy and attempt.
        claimed = Message.objects.filter(
            pk=message.pk, sent_copy_status=SentCopyStatus.PENDING,
            sent_copy_next_attempt_at=message.sent_copy_next_attempt_at,
        ).update(sent_copy_next_attempt_at=now + LEASE)
        if claimed:
            save_sent_copy(message)
            tried.append(message.pk)
    return tried
