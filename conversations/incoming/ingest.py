"""ingest_email: raw RFC 5322 bytes to a stored, threaded message, exactly once, in one transaction.

The rules for one message, top to bottom: is it already stored (dedup)? who is the customer
(contact)? which conversation does it belong to (threading: the pure choice in
conversations.incoming.threading, read again under the row lock)? then its rows. Parsing is pure
(inboxes.mailformat.parsing). Bad content never raises: it goes to the quarantine.
Infrastructure errors (database down, disk full) do raise, so the caller does not move its IMAP
cursor past a message that was not stored.

How a batch is stored quickly (parsing ahead, lookups loaded once per batch, file threads,
pipelined transactions) is conversations.incoming.batch, which calls the rules here through
`_InboxRules`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from conversations.incoming.batch import (
    INFRASTRUCTURE_ERRORS,
    IncomingEmail,
    IngestResult,
    MessageTooLarge,
    ParsedAhead,
    Rules,
    load_lookups,
    parse_incoming,
    run_batch,
    store_with_retries,
)
from conversations.incoming.bounces import mark_bounced
from conversations.incoming.files import MessageFiles, StoredFile, write_message_files
from conversations.incoming.lookups import Lookups, known_conversation, own_addresses, raw_id, synthetic_id
from conversations.incoming.quarantine import describe_error, format_details, quarantine_message
from conversations.incoming.threading import (
    Action,
    KnownConversation,
    ThreadChoice,
    choose_conversation,
    find_subject_token,
    subject_token_range,
)
from conversations.live.events import (
    CONVERSATION_CREATED,
    CONVERSATION_UPDATED,
    MESSAGE_CREATED,
    MESSAGE_STATUS,
    publish,
)
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
from conversations.signals import conversation_started
from conversations.tokens import conversation_from_message_id
from core.rows import ReservedIds, insert_row, lock_row, update_row
from inboxes.mailformat.headers import strip_all_prefixes
from inboxes.mailformat.parsing import ParsedEmail
from inboxes.models import Inbox

logger = logging.getLogger(__name__)
# Cut to the columns' lengths here, whatever the parser's own bound: a value one character too
# long is a DataError on PostgreSQL and the message would go to the quarantine.
_SUBJECT_LENGTH = Message._meta.get_field("subject").max_length
_CONVERSATION_SUBJECT_LENGTH = Conversation._meta.get_field("subject").max_length

# Imported from here by the poller, the import command and the tests.
__all__ = [
    "IncomingEmail", "IngestResult", "MessageTooLarge", "ParsedAhead", "discard_quarantined", "ingest_batch",
    "ingest_email", "retry_quarantined",
]


def ingest_email(
    inbox: Inbox, raw: bytes, *, imap_folder: str = "", imap_uidvalidity: int | None = None,
    imap_uid: int | None = None, archive: bool = False, too_large: bool = False, size: int | None = None,
) -> IngestResult:
    """Store one message (or find it already stored, or quarantine it). See the module docstring.

    `too_large`: see IncomingEmail. `archive`: imported history — stored in an archived
    conversation, no events.
    """
    item = IncomingEmail(raw, imap_folder, imap_uidvalidity, imap_uid, too_large, size)
    return next(ingest_batch(inbox, [item], archive=archive))[1]


def ingest_batch(
    inbox: Inbox, items: Iterable[IncomingEmail] | ParsedAhead, *, archive: bool = False,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[tuple[IncomingEmail, IngestResult]]:
    """Store messages in order, each in its own transaction, yielding each once it is committed.

    What the messages need of stored rows (dedup, threading, contacts) is loaded once for the
    batch (conversations.incoming.lookups) instead of once per message. An infrastructure error raises
    out of the iteration: what was yielded before it is committed, the rest is not.

    `meanwhile`: work of the caller's that needs no database (see ParsedAhead), called once per
    message while its COMMIT is on its way.
    """
    return run_batch(_InboxRules(inbox, archive=archive), items, meanwhile=meanwhile)


def retry_quarantined(quarantined_id: int) -> IngestResult:
    """Ingest a quarantined message again (after a fix); on success the row is marked retried."""
    row = QuarantinedMessage.objects.select_related("inbox").get(pk=quarantined_id)
    if row.status != QuarantineStatus.HELD:
        return IngestResult(message=row.message, quarantined=row)
    with row.raw.open("rb") as handle:
        raw = handle.read()
    item = IncomingEmail(raw, row.imap_folder, row.imap_uidvalidity, row.imap_uid, size=row.raw_size)
    try:
        parsed = parse_incoming(row.inbox, item, own_addresses())
        if isinstance(parsed, Exception):
            raise parsed
        result = store_with_retries(_InboxRules(row.inbox, archive=False), item, parsed,
                                    load_lookups(row.inbox, [parsed]), ReservedIds({}),
                                    write_message_files(raw, parsed.attachments))
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


class _InboxRules(Rules):
    """The rules below, as the batch machinery calls them."""

    def is_stored(self, lookups: Lookups, parsed: ParsedEmail) -> bool:
        return _dedup(lookups, parsed)[0] is not None

    def store(self, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
              files: MessageFiles) -> tuple[IngestResult, _Stored | None]:
        return _store(self.inbox, item, parsed, lookups, ids, files, archive=self.archive)

    def quarantine(self, item: IncomingEmail, error: Exception) -> IngestResult:
        logger.warning("Quarantined a message of inbox %s (UID %s): %s", self.inbox.pk, item.imap_uid, error)
        row = quarantine_message(
            self.inbox, item.raw, error, imap_folder=item.imap_folder, imap_uidvalidity=item.imap_uidvalidity,
            imap_uid=item.imap_uid, size=item.size,
        )
        return IngestResult(quarantined=row)


@dataclass(frozen=True)
class _Stored:
    """What storing a message leaves for later: what the batch remembers, and what to announce."""

    message: Message
    known: KnownConversation
    contact: Contact
    inbox: Inbox
    result: IngestResult
    archive: bool
    bounced: tuple[tuple[int, dict], ...] = ()  # (department, payload): message.status of what it bounced

    def remember(self, lookups: Lookups) -> None:
        lookups.remember(self.message, self.known, self.contact)

    def announce(self) -> None:
        """Tell agents and hooked-in features, once the rows are committed (or inside the
        transaction, where on_commit defers them to its commit)."""
        if self.archive:
            return
        message, result = self.message, self.result
        _publish(message.conversation, message, result.conversation_created, result.reopened)
        for department_id, payload in self.bounced:
            publish(MESSAGE_STATUS, department_id, payload)
        if result.conversation_created and message.conversation.status == ConversationStatus.OPEN:
            # Features such as acknowledgements and routing hook in here without ingest knowing
            # them; a conversation stored closed (our own mail, a bounce) is for no one to answer.
            conversation_started.send(sender=Message, message_id=message.pk, inbox=self.inbox)


def _store(
    inbox: Inbox, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles, *, archive: bool,
) -> tuple[IngestResult, _Stored | None]:
    """The rows of one message, inside its transaction; also what the batch should remember."""
    duplicate, message_id, conflict = _dedup(lookups, parsed)
    if duplicate is not None:
        _record_delivery(duplicate, item)
        return IngestResult(message=duplicate, created=False), None
    contact = _contact(lookups, ids, parsed)
    now = timezone.now()
    when = (parsed.date or now) if archive else now
    # Mail that is ours, not a customer's, and bounces thread like any other (a bounce by the
    # Message-ID it quotes) but never reopen a conversation nor open one: they are stored for
    # the record, flagged with why.
    quiet = _own_mail(lookups, parsed) or _bounce_reason(parsed)
    automatic_reason = parsed.automatic_reason or quiet
    choice = _choose(inbox, lookups, parsed, now=now, archive=archive, quiet=quiet)
    conversation, known, choice = _conversation(inbox, contact, lookups, ids, parsed, choice, now=now, when=when,
                                                archive=archive, quiet=quiet)
    created_conversation = choice.action == Action.NEW
    problems = parsed.problems + (["Another message of this inbox has the same Message-ID."] if conflict else [])
    raw_file, attachment_files = files.stored()  # written by now, or the error they met
    message = Message(
        pk=ids.take(Message), conversation=conversation, inbox=inbox, direction=Direction.IN,
        message_id=message_id, header_message_id=parsed.message_id or "",
        message_id_synthetic=message_id != parsed.message_id, message_id_conflict=conflict,
        in_reply_to=" ".join(f"<{i}>" for i in parsed.in_reply_to),
        references=" ".join(f"<{i}>" for i in parsed.references),
        from_address=parsed.from_address, from_name=parsed.from_name,
        display_name_has_address=parsed.display_name_has_address,
        new_participant=choice.new_participant and choice.action != Action.NEW and not quiet,
        to=parsed.to, cc=parsed.cc, bcc=parsed.bcc, reply_to=parsed.reply_to,
        subject=parsed.subject[:_SUBJECT_LENGTH], text=parsed.text, html=parsed.html, sent_at=parsed.date,
        created_at=when,
        raw_sha256=raw_file.sha256, raw_size=item.size or len(item.raw),
        content_hash=parsed.content_hash, is_automatic=bool(automatic_reason),
        automatic_reason=automatic_reason[:255], too_large=item.too_large,
        parse_problems="\n".join(problems), archived=archive,
        imap_folder=item.imap_folder, imap_uidvalidity=item.imap_uidvalidity, imap_uid=item.imap_uid,
        raw=raw_file.name,
    )
    insert_row(message)
    _save_attachments(message, ids, parsed, attachment_files)
    bounced = mark_bounced(lookups, parsed.bounce, now=now) if parsed.bounce and not archive else []
    reopened = choice.action == Action.REOPEN
    result = IngestResult(
        message=message, created=True, conversation_created=created_conversation, reopened=reopened,
    )
    return result, _Stored(message, known, contact, inbox, result, archive=archive, bounced=tuple(bounced))


def _dedup(lookups: Lookups, parsed: ParsedEmail) -> tuple[Message | None, str, bool]:
    """(the stored copy of this message or None, the message_id to store it under, conflict)."""
    synthetic = synthetic_id(parsed)
    if not parsed.message_id:
        key = raw_id(parsed)
        found = lookups.stored(key)
        # Stored before keys were the raw bytes' hash: the same bytes are the same message.
        earlier = lookups.stored(synthetic)
        if found is None and earlier is not None and earlier.raw_sha256 == parsed.raw_sha256:
            found = earlier
        return found, key, False
    existing = lookups.stored(parsed.message_id)
    if existing is None:
        return None, parsed.message_id, False
    # Our own sent message coming back (a copy in the inbox) and a header-only record of an
    # oversized message are that message, whatever the bytes say.
    if existing.content_hash == parsed.content_hash or existing.direction == Direction.OUT or existing.too_large:
        return existing, parsed.message_id, False
    return lookups.stored(synthetic), synthetic, True


def _record_delivery(stored: Message, item: IncomingEmail) -> None:
    """A delivery (an IMAP UID) skipped as a copy of a stored message is noted on that message,
    so a manager can see where a "missing" message went; the same UID fetched again is none."""
    if item.imap_uid is None:
        return
    delivery = {"folder": item.imap_folder, "uidvalidity": item.imap_uidvalidity, "uid": item.imap_uid}
    own = {"folder": stored.imap_folder, "uidvalidity": stored.imap_uidvalidity, "uid": stored.imap_uid}
    if delivery == own or delivery in stored.duplicate_deliveries:
        return
    stored.duplicate_deliveries = [*stored.duplicate_deliveries, delivery]
    update_row(Message, stored.pk, duplicate_deliveries=stored.duplicate_deliveries)


def _own_mail(lookups: Lookups, parsed: ParsedEmail) -> str:
    """Why the message is our own mail rather than a customer's, or "": sent from one of our
    inboxes (a colleague writing as the inbox, another Switchboard inbox), or carrying a
    Message-ID we made (its signed token, or the dedicated Message-ID domain)."""
    sender = parsed.from_address.lower()
    if sender and sender in lookups.own:
        return f"Sent from our own inbox {sender}"
    message_id = parsed.message_id or ""
    domain = (settings.SWITCHBOARD_MESSAGE_ID_DOMAIN or "").lower()
    if domain and message_id.rpartition("@")[2].lower() == domain:
        return f"Carries a Message-ID of our own domain {domain}"
    if message_id and conversation_from_message_id(message_id) is not None:
        return "Carries one of our own Message-IDs"
    return ""


def _bounce_reason(parsed: ParsedEmail) -> str:
    if parsed.bounce is None:
        return ""
    return "A delivery failure report (bounce)" if parsed.bounce.failed else "A delivery delay report"


def _contact(lookups: Lookups, ids: ReservedIds, parsed: ParsedEmail) -> Contact:
    address, name = lookups.customer(parsed)
    contact = lookups.contact(address)
    if contact is None:
        # No savepoint: when the same customer wrote to two inboxes at once and the other insert
        # won, the IntegrityError rolls this message back and the retry finds that contact.
        contact = Contact(pk=ids.take(Contact), address=address, name=name)
        insert_row(contact)
        return contact
    if not contact.name and name:
        Contact.objects.filter(pk=contact.pk).update(name=name)
        contact = Contact(pk=contact.pk, address=contact.address, name=name, created_at=contact.created_at)
    return contact


def _choose(inbox: Inbox, lookups: Lookups, parsed: ParsedEmail, *, now, archive: bool,
            quiet: str = "") -> ThreadChoice:
    ids = parsed.thread_ids
    known = lookups.known_messages(ids)
    subject_conversation = None
    prefix = find_subject_token(parsed.subject)
    if prefix:
        low, high = subject_token_range(prefix)
        found = (
            Conversation.objects.filter(inbox=inbox, public_id__gte=low, public_id__lte=high)
            .select_related("contact").order_by("-last_message_at").first()
        )
        subject_conversation = known_conversation(found) if found else None
    choice = choose_conversation(
        sender=lookups.customer(parsed)[0], thread_ids=ids, known_messages=known,
        token_conversations=lookups.token_conversations(ids, known), subject_conversation=subject_conversation,
        now=now, reopen_window=timedelta(days=settings.REOPEN_WINDOW_DAYS), archive=archive,
        also_from=parsed.from_address,
    )
    # Nobody waits for an answer to our own mail or a bounce: it joins the conversation it is
    # about as that conversation is, closed or not, however long ago it closed.
    if quiet and choice.action == Action.REOPEN:
        return ThreadChoice(Action.JOIN, choice.conversation, reason=f"{choice.reason}; not reopened: {quiet}")
    if quiet and choice.action == Action.NEW and choice.previous is not None:
        return ThreadChoice(Action.JOIN, choice.previous, reason=f"{choice.reason}; joined all the same: {quiet}")
    return choice


def _conversation(
    inbox: Inbox, contact: Contact, lookups: Lookups, ids: ReservedIds, parsed: ParsedEmail, choice: ThreadChoice,
    *, now, when, archive: bool, quiet: str = "",
) -> tuple[Conversation, KnownConversation, ThreadChoice]:
    """The conversation to store the message in, as it is after this message; and the choice,
    decided again on the row's current state when that differs from what the choice assumed.
    A `quiet` message (see _store) that threads nowhere is stored in a new, closed conversation."""
    candidate = choice.conversation or choice.previous
    if candidate is not None:
        # The lock orders us with an agent closing or reopening it right now; its status as
        # read under the lock decides, not the batch's earlier reading.
        row = lock_row(Conversation, candidate.id,
                       ("public_id", "department_id", "status", "closed_at", "last_message_at"))
        current = known_conversation(row, candidate.contact_address)
        if current != candidate:
            lookups.update_conversation(current)
            choice = _choose(inbox, lookups, parsed, now=now, archive=archive, quiet=quiet)
        if choice.action != Action.NEW:
            return _join(row, current, choice, now=now, when=when, archive=archive)
    conversation = Conversation(
        pk=ids.take(Conversation), inbox=inbox, department_id=inbox.department_id, contact=contact,
        subject=(strip_all_prefixes(parsed.subject) or parsed.subject)[:_CONVERSATION_SUBJECT_LENGTH],
        previous_id=choice.previous.id if choice.previous else None,
        archived=archive,
        # Imported history is done with; a reply to it reopens it or follows it up as usual.
        status=ConversationStatus.CLOSED if archive or quiet else ConversationStatus.OPEN,
        closed_at=when if archive or quiet else None,
        created_at=when, last_message_at=when,
    )
    insert_row(conversation)
    return conversation, known_conversation(conversation, contact.address), choice


def _join(row: Conversation, current: KnownConversation, choice: ThreadChoice, *, now, when, archive: bool
          ) -> tuple[Conversation, KnownConversation, ThreadChoice]:
    """One UPDATE at most: reopen it and/or move its last_message_at forward."""
    changes: dict = {}
    if choice.action == Action.REOPEN:
        changes.update(status=ConversationStatus.OPEN, closed_at=None, updated_at=now)
    if not archive and when > row.last_message_at:
        changes["last_message_at"] = when
    if changes:
        update_row(Conversation, row.pk, **changes)
        for name, value in changes.items():
            setattr(row, name, value)
    return row, known_conversation(row, current.contact_address), choice


def _save_attachments(message: Message, ids: ReservedIds, parsed: ParsedEmail, files: list[StoredFile]) -> None:
    for part, stored in zip(parsed.attachments, files, strict=True):
        # The storage key came from upload_to (random); the sender's name is never part of it.
        insert_row(Attachment(
            pk=ids.take(Attachment), message=message, file=stored.name, filename=part.filename,
            content_type=part.content_type, size=len(part.payload), sha256=stored.sha256,
            content_id=part.content_id, inline=part.inline,
        ))


def _publish(conversation: Conversation, message: Message, created: bool, reopened: bool) -> None:
    ids = {"conversation": str(conversation.public_id)}
    if created:
        publish(CONVERSATION_CREATED, conversation.department_id, ids)
    elif reopened:
        publish(CONVERSATION_UPDATED, conversation.department_id, {**ids, "status": ConversationStatus.OPEN})
    publish(MESSAGE_CREATED, conversation.department_id, {**ids, "message": str(message.public_id)})
