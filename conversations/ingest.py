"""ingest_email: raw RFC 5322 bytes to a stored, threaded message, exactly once, in one transaction.

Parsing and the choice of conversation are pure (conversations.parsing, conversations.threading);
this module loads what they need and saves what they decided. Bad content never raises: it goes
to the quarantine. Infrastructure errors (database down, disk full) do raise, so the caller does
not move its IMAP cursor past a message that was not stored.

Files (the raw message, attachments) are written inside the transaction, before the rows; when
the transaction fails they are deleted. A process killed in between can leave an orphan file,
never a row without its file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, InternalError, OperationalError, ProgrammingError, transaction
from django.db.models import Q
from django.db.models.fields.files import FieldFile
from django.db.models.functions import Lower
from django.utils import timezone

from conversations.events import publish
from conversations.models import (
    Attachment,
    Contact,
    Conversation,
    ConversationStatus,
    Direction,
    Message,
    QuarantinedMessage,
    QuarantineStatus,
)
from conversations.parsing import ParsedEmail, parse_email, strip_reply_prefix
from conversations.quarantine import PlainWordsError, describe_error, format_details, quarantine_message
from conversations.threading import (
    Action,
    KnownConversation,
    KnownMessage,
    ThreadChoice,
    choose_conversation,
    find_subject_token,
    subject_token_range,
)
from conversations.tokens import conversation_from_message_id
from inboxes.models import Inbox

logger = logging.getLogger(__name__)

# Errors that say nothing about the message: the caller must retry it later, not skip it.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, InternalError, ProgrammingError, OSError, MemoryError,
)
# RFC 2606 reserves .invalid: these ids and addresses can never clash with real ones.
SYNTHETIC_ID_DOMAIN = "synthetic.switchboard.invalid"
UNKNOWN_SENDER = "unknown-sender@switchboard.invalid"
_STORE_ATTEMPTS = 3


class MessageTooLarge(PlainWordsError):
    """A full message over the size limit was handed to ingest; it goes to the quarantine."""


@dataclass
class IngestResult:
    message: Message | None = None
    created: bool = False
    quarantined: QuarantinedMessage | None = None
    conversation_created: bool = False
    reopened: bool = False


@dataclass(frozen=True)
class _Source:
    folder: str = ""
    uidvalidity: int | None = None
    uid: int | None = None


def ingest_email(
    inbox: Inbox,
    raw: bytes,
    *,
    imap_folder: str = "",
    imap_uidvalidity: int | None = None,
    imap_uid: int | None = None,
    archive: bool = False,
    too_large: bool = False,
    size: int | None = None,
) -> IngestResult:
    """Store one message (or find it already stored, or quarantine it). See the module docstring.

    `too_large`: `raw` holds only the headers of a message of `size` bytes that was not fetched.
    `archive`: imported history — stored in an archived conversation, no events.
    """
    source = _Source(imap_folder, imap_uidvalidity, imap_uid)
    try:
        return _ingest(inbox, raw, source, archive=archive, too_large=too_large, size=size)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as error:
        logger.warning("Quarantined a message of inbox %s (UID %s): %s", inbox.pk, imap_uid, error)
        row = quarantine_message(
            inbox, raw, error, imap_folder=imap_folder, imap_uidvalidity=imap_uidvalidity, imap_uid=imap_uid,
            size=size,
        )
        return IngestResult(quarantined=row)


def retry_quarantined(quarantined_id: int) -> IngestResult:
    """Ingest a quarantined message again (after a fix); on success the row is marked retried."""
    row = QuarantinedMessage.objects.select_related("inbox").get(pk=quarantined_id)
    if row.status != QuarantineStatus.HELD:
        return IngestResult(message=row.message, quarantined=row)
    with row.raw.open("rb") as handle:
        raw = handle.read()
    source = _Source(row.imap_folder, row.imap_uidvalidity, row.imap_uid)
    try:
        result = _ingest(row.inbox, raw, source, archive=False, too_large=False, size=row.raw_size)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as error:
        row.error = describe_error(error)
        row.details = format_details(error)
        row.save(update_fields=["error", "details"])
        return IngestResult(quarantined=row)
    QuarantinedMessage.objects.filter(pk=row.pk).update(
        status=QuarantineStatus.RETRIED, message=result.message, resolved_at=timezone.now()
    )
    return result


def discard_quarantined(quarantined_id: int) -> None:
    """Mark a quarantined message discarded. Its raw file stays, so a mistake can be undone by hand."""
    QuarantinedMessage.objects.filter(pk=quarantined_id, status=QuarantineStatus.HELD).update(
        status=QuarantineStatus.DISCARDED, resolved_at=timezone.now()
    )


def _ingest(
    inbox: Inbox, raw: bytes, source: _Source, *, archive: bool, too_large: bool, size: int | None
) -> IngestResult:
    limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
    if not too_large and len(raw) > limit:
        # Every resource is bounded: a message this size is kept raw, not parsed in memory.
        raise MessageTooLarge(
            f"The message is {_size(len(raw))}, over the limit of {_size(limit)}; it was kept but not read. "
            "Raise the inbox's size limit and retry it."
        )
    own = frozenset(address.lower() for address in Inbox.objects.values_list("address", flat=True))
    parsed = parse_email(raw, own_addresses=own, headers_only=too_large)
    if too_large:
        parsed.text = _too_large_note(inbox, size or len(raw))
    for attempt in range(_STORE_ATTEMPTS):
        written: list[FieldFile] = []
        try:
            with transaction.atomic():
                return _store(inbox, raw, parsed, source, written, archive=archive, too_large=too_large, size=size)
        except IntegrityError:
            # Another process stored this message (or its contact) between our look and our
            # insert; the unique constraint decided. Look again: it is a duplicate now.
            logger.info("Lost an insert race for %s in inbox %s; looking again", parsed.message_id, inbox.pk)
            _delete(written)
            if attempt == _STORE_ATTEMPTS - 1:
                raise
        except BaseException:
            _delete(written)  # the rows rolled back; their files must not linger
            raise
    raise AssertionError("unreachable")


def _delete(files: list[FieldFile]) -> None:
    for file in files:
        file.storage.delete(file.name)


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB" if size >= 1_048_576 else f"{size:,} bytes"


def _too_large_note(inbox: Inbox, size: int) -> str:
    limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
    return (
        f"This message is {_size(size)}, over the limit of {_size(limit)}; "
        "it was not downloaded. Its headers are kept; read it in the mailbox itself."
    )


def _store(
    inbox: Inbox, raw: bytes, parsed: ParsedEmail, source: _Source, written: list[FieldFile], *,
    archive: bool, too_large: bool, size: int | None,
) -> IngestResult:
    duplicate, message_id, conflict = _dedup(inbox, parsed)
    if duplicate is not None:
        return IngestResult(message=duplicate, created=False)
    contact = _contact(parsed)
    now = timezone.now()
    when = (parsed.date or now) if archive else now
    choice = _choose(inbox, parsed, now=now, archive=archive)
    conversation, created_conversation = _conversation(inbox, contact, parsed, choice, when=when, archive=archive)
    problems = parsed.problems + (["Another message of this inbox has the same Message-ID."] if conflict else [])
    message = Message(
        conversation=conversation, inbox=inbox, direction=Direction.IN,
        message_id=message_id, header_message_id=parsed.message_id or "",
        message_id_synthetic=message_id != parsed.message_id, message_id_conflict=conflict,
        in_reply_to=" ".join(f"<{i}>" for i in parsed.in_reply_to),
        references=" ".join(f"<{i}>" for i in parsed.references),
        from_address=parsed.from_address, from_name=parsed.from_name,
        to=parsed.to, cc=parsed.cc, bcc=parsed.bcc, reply_to=parsed.reply_to,
        subject=parsed.subject, text=parsed.text, html=parsed.html, sent_at=parsed.date, created_at=when,
        raw_sha256=hashlib.sha256(raw).hexdigest(), raw_size=size or len(raw), content_hash=parsed.content_hash,
        is_automatic=parsed.is_automatic, automatic_reason=parsed.automatic_reason, too_large=too_large,
        parse_problems="\n".join(problems), archived=archive,
        imap_folder=source.folder, imap_uidvalidity=source.uidvalidity, imap_uid=source.uid,
    )
    message.raw.save("message.eml", ContentFile(raw), save=False)
    written.append(message.raw)
    message.save()
    _save_attachments(message, parsed, written)
    if not archive:
        if not created_conversation:
            Conversation.objects.filter(pk=conversation.pk, last_message_at__lt=when).update(last_message_at=when)
        _publish(conversation, message, created_conversation, choice.action == Action.REOPEN)
    return IngestResult(
        message=message, created=True, conversation_created=created_conversation,
        reopened=choice.action == Action.REOPEN,
    )


def _synthetic_id(parsed: ParsedEmail) -> str:
    return f"{parsed.content_hash}@{SYNTHETIC_ID_DOMAIN}"


def _stored(inbox: Inbox, message_id: str) -> Message | None:
    # No ORDER BY: the unique (inbox, message_id) index answers directly. Only the columns dedup
    # reads: most messages are new, and building a 50-column SELECT for nothing costs.
    rows = Message.objects.filter(inbox=inbox, message_id=message_id).order_by()
    return next(iter(rows.only("pk", "message_id", "content_hash", "direction", "too_large")[:1]), None)


def _dedup(inbox: Inbox, parsed: ParsedEmail) -> tuple[Message | None, str, bool]:
    """(the stored copy of this message or None, the message_id to store it under, conflict)."""
    synthetic = _synthetic_id(parsed)
    if not parsed.message_id:
        return _stored(inbox, synthetic), synthetic, False
    existing = _stored(inbox, parsed.message_id)
    if existing is None:
        return None, parsed.message_id, False
    # Our own sent message coming back (a copy in the inbox) and a header-only record of an
    # oversized message are that message, whatever the bytes say.
    if existing.content_hash == parsed.content_hash or existing.direction == Direction.OUT or existing.too_large:
        return existing, parsed.message_id, False
    return _stored(inbox, synthetic), synthetic, True


def _contact(parsed: ParsedEmail) -> Contact:
    address = parsed.from_address or UNKNOWN_SENDER
    # LOWER(address) = …, the expression of the unique index, so the lookup is an index lookup.
    same_address = Contact.objects.annotate(address_lower=Lower("address")).filter(address_lower=address.lower())
    contact = next(iter(same_address.order_by()[:1]), None)
    if contact is not None:
        if not contact.name and parsed.from_name:
            Contact.objects.filter(pk=contact.pk).update(name=parsed.from_name)
        return contact
    try:
        with transaction.atomic():
            return Contact.objects.create(address=address, name=parsed.from_name)
    except IntegrityError:
        # The same customer wrote to two inboxes at once: the other insert won.
        return same_address.get()


# What threading needs of a conversation: loading only this keeps the lookups cheap.
_CONVERSATION_FIELDS = (
    "conversation__public_id", "conversation__status", "conversation__closed_at",
    "conversation__last_message_at", "conversation__contact__address",
)


def _known(conversation: Conversation) -> KnownConversation:
    return KnownConversation(
        id=conversation.pk, public_id=conversation.public_id, contact_address=conversation.contact.address,
        closed=conversation.status == ConversationStatus.CLOSED, closed_at=conversation.closed_at,
        last_message_at=conversation.last_message_at,
    )


def _participants(message: Message) -> frozenset[str]:
    # Only a customer's message vouches for the people on it; our outgoing mail may have gone to
    # many, and their replies must not merge into one conversation.
    if message.direction == Direction.OUT:
        return frozenset()
    people = [message.from_address] + [p.get("address", "") for p in [*message.to, *message.cc]]
    return frozenset(p.lower() for p in people if p)


def _choose(inbox: Inbox, parsed: ParsedEmail, *, now, archive: bool) -> ThreadChoice:
    ids = parsed.thread_ids
    known: dict[str, KnownMessage] = {}
    if ids:
        rows = (
            Message.objects.filter(inbox=inbox)
            .filter(Q(message_id__in=ids) | Q(header_message_id__in=ids))
            .select_related("conversation__contact")
            .only("message_id", "header_message_id", "direction", "from_address", "to", "cc", *_CONVERSATION_FIELDS)
            .order_by()
        )
        # A message stored under its own id wins over one that only carries it in its header
        # (the second of two messages sharing a Message-ID).
        for row in sorted(rows, key=lambda r: r.message_id not in ids):
            entry = KnownMessage(_known(row.conversation), _participants(row))
            for key in (row.message_id, row.header_message_id):
                if key in ids:
                    known.setdefault(key, entry)
    tokens = {i: conversation_from_message_id(i) for i in ids if i not in known}
    tokens = {i: public_id for i, public_id in tokens.items() if public_id is not None}
    by_public_id = {
        c.public_id: _known(c)
        for c in Conversation.objects.filter(inbox=inbox, public_id__in=tokens.values()).select_related("contact")
        .only(*(f.removeprefix("conversation__") for f in _CONVERSATION_FIELDS)).order_by()
    } if tokens else {}
    token_conversations = {i: by_public_id[p] for i, p in tokens.items() if p in by_public_id}
    subject_conversation = None
    prefix = find_subject_token(parsed.subject)
    if prefix:
        low, high = subject_token_range(prefix)
        found = (
            Conversation.objects.filter(inbox=inbox, public_id__gte=low, public_id__lte=high)
            .select_related("contact").order_by("-last_message_at").first()
        )
        subject_conversation = _known(found) if found else None
    return choose_conversation(
        sender=parsed.from_address or UNKNOWN_SENDER, thread_ids=ids, known_messages=known,
        token_conversations=token_conversations, subject_conversation=subject_conversation, now=now,
        reopen_window=timedelta(days=settings.REOPEN_WINDOW_DAYS), archive=archive,
    )


def _conversation(
    inbox: Inbox, contact: Contact, parsed: ParsedEmail, choice: ThreadChoice, *, when, archive: bool
) -> tuple[Conversation, bool]:
    if choice.action != Action.NEW and choice.conversation is not None:
        conversation = Conversation.objects.select_for_update().get(pk=choice.conversation.id)
        if choice.action == Action.REOPEN:
            conversation.status = ConversationStatus.OPEN
            conversation.closed_at = None
            conversation.save(update_fields=["status", "closed_at", "updated_at"])
        return conversation, False
    conversation = Conversation.objects.create(
        inbox=inbox, department=inbox.department, contact=contact,
        subject=strip_reply_prefix(parsed.subject)[:998] or parsed.subject,
        previous_id=choice.previous.id if choice.previous else None,
        archived=archive,
        # Imported history is done with; a reply to it reopens it or follows it up as usual.
        status=ConversationStatus.CLOSED if archive else ConversationStatus.OPEN,
        closed_at=when if archive else None,
        created_at=when, last_message_at=when,
    )
    return conversation, True


def _save_attachments(message: Message, parsed: ParsedEmail, written: list[FieldFile]) -> None:
    rows = []
    for part in parsed.attachments:
        row = Attachment(
            message=message, filename=part.filename, content_type=part.content_type, size=len(part.payload),
            sha256=hashlib.sha256(part.payload).hexdigest(), content_id=part.content_id, inline=part.inline,
        )
        # The storage key comes from upload_to (random); the sender's name is never part of it.
        row.file.save("attachment", ContentFile(part.payload), save=False)
        written.append(row.file)
        rows.append(row)
    Attachment.objects.bulk_create(rows)


def _publish(conversation: Conversation, message: Message, created: bool, reopened: bool) -> None:
    ids = {"conversation": str(conversation.public_id)}
    if created:
        publish("conversation.created", conversation.department_id, ids)
    elif reopened:
        publish("conversation.updated", conversation.department_id, {**ids, "status": ConversationStatus.OPEN})
    publish("message.created", conversation.department_id, {**ids, "message": str(message.public_id)})
