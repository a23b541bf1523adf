"""ingest_email: raw RFC 5322 bytes to a stored, threaded message, exactly once, in one transaction.

Parsing and the choice of conversation are pure (conversations.parsing, conversations.threading);
this module loads what they need and saves what they decided. Bad content never raises: it goes
to the quarantine. Infrastructure errors (database down, disk full) do raise, so the caller does
not move its IMAP cursor past a message that was not stored.

Files (the raw message, attachments) are written before the rows that name them, by a few file
threads (conversations.files) while this thread stores the batch's earlier messages; when a
message is not stored (a duplicate, quarantined, a failed transaction) its files are deleted.
A process killed in between can leave an orphan file, never a row without its file.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, InternalError, OperationalError, ProgrammingError, transaction
from django.utils import timezone

from conversations import parse_pool
from conversations.events import publish
from conversations.files import MessageFiles, StoredFile, write_message_files
from conversations.lookups import Lookups, known_conversation, own_addresses, sender_address, synthetic_id
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
from conversations.rows import (
    Commit,
    ReservedIds,
    TransactionPipeline,
    atomic_pipelined,
    insert_row,
    lock_row,
    update_row,
)
from conversations.signals import conversation_started
from conversations.threading import (
    Action,
    KnownConversation,
    ThreadChoice,
    choose_conversation,
    find_subject_token,
    subject_token_range,
)
from inboxes.models import Inbox

logger = logging.getLogger(__name__)

# Errors that say nothing about the message: the caller must retry it later, not skip it.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, InternalError, ProgrammingError, OSError, MemoryError,
)
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
class IncomingEmail:
    """One message for `ingest_batch`: raw bytes and where they came from.

    `too_large`: `raw` holds only the headers of a message of `size` bytes that was not fetched.
    """

    raw: bytes
    imap_folder: str = ""
    imap_uidvalidity: int | None = None
    imap_uid: int | None = None
    too_large: bool = False
    size: int | None = None


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


class ParsedAhead:
    """A batch's messages, parsed ahead of their turn.

    Created, the batch starts parsing in the helper process (conversations.parse_pool), while
    the worker stores the batch before it. What the helper does not take is parsed here, one
    at a time whenever the caller has a moment to spare: a poller passes `parse_one` as
    `ingest_batch(meanwhile=...)`. Parsing needs no database, so it can run inside another
    message's transaction. It never raises: an error is kept and raised (or quarantined) at the
    message's own turn, as if it were parsed then.
    """

    def __init__(self, inbox: Inbox, items: Iterable[IncomingEmail]) -> None:
        self.inbox = inbox
        self.items = list(items)
        self._own = own_addresses()
        self._parsed: list[ParsedEmail | Exception | _Failed] = []
        self._helper = [None if _over_limit(inbox, item) else
                        parse_pool.submit(item.raw, headers_only=item.too_large, own_addresses=self._own)
                        for item in self.items]

    def parse_one(self) -> bool:
        """Parse the next message not parsed yet; False when there is none left."""
        index = len(self._parsed)
        if index >= len(self.items):
            return False
        item, helper = self.items[index], self._helper[index]
        self._helper[index] = None
        try:
            self._parsed.append(_parse(self.inbox, item, self._own,
                                       parse_pool.result(helper) if helper is not None else None))
        except Exception as error:  # an infrastructure error: raised again at the message's turn
            self._parsed.append(_Failed(error))
        return True

    def entries(self) -> list[tuple[IncomingEmail, ParsedEmail | Exception]]:
        """Every message with its parse (parsing what is left); an infrastructure error met on
        any of them is raised now, before anything of the batch is stored."""
        while self.parse_one():
            pass
        entries = []
        for item, parsed in zip(self.items, self._parsed, strict=True):
            if isinstance(parsed, _Failed):
                raise parsed.error
            entries.append((item, parsed))
        self.items, self._parsed, self._helper = [], [], []  # the caller owns them now (and frees them one by one)
        return entries


@dataclass(frozen=True)
class _Failed:
    error: Exception


def ingest_batch(
    inbox: Inbox, items: Iterable[IncomingEmail] | ParsedAhead, *, archive: bool = False,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[tuple[IncomingEmail, IngestResult]]:
    """Store messages in order, each in its own transaction, yielding each once it is committed.

    What the messages need of stored rows (dedup, threading, contacts) is loaded once for the
    batch (conversations.lookups) instead of once per message. An infrastructure error raises
    out of the iteration: what was yielded before it is committed, the rest is not.

    `meanwhile`: work of the caller's that needs no database (see ParsedAhead), called once per
    message while its COMMIT is on its way.
    """
    ahead = items if isinstance(items, ParsedAhead) else ParsedAhead(inbox, items)
    pending: list[tuple[IncomingEmail, ParsedEmail | Exception] | None] = list(ahead.entries())
    lookups = _lookups(inbox, [parsed for _item, parsed in pending if isinstance(parsed, ParsedEmail)])
    # The files of the messages that are not already stored start on the file threads now; each
    # message waits for its own just before its rows. What is left unclaimed is deleted.
    new = [isinstance(parsed, ParsedEmail) and _dedup(lookups, parsed)[0] is None for _item, parsed in pending]
    files: list[MessageFiles | None] = [
        write_message_files(item.raw, parsed.attachments) if fresh else None
        for (item, parsed), fresh in zip(pending, new, strict=True)
    ]
    ids = _reserve_ids([parsed for (_item, parsed), fresh in zip(pending, new, strict=True) if fresh])
    # On PostgreSQL each message's transaction goes out without waiting for the one before it
    # to be confirmed (rows.TransactionPipeline); a message is yielded, and announced, only
    # once its own COMMIT is. Elsewhere, and for what a pipeline cannot take, one by one.
    pipeline = TransactionPipeline.start(Message)
    sent: deque[_Sent] = deque()
    try:
        for index, entry in enumerate(pending):
            pending[index] = None  # a stored message's bytes and parts need not outlive its turn
            item, parsed = entry
            mine, files[index] = files[index], None  # from here on, its turn owns its files
            if pipeline is not None and isinstance(parsed, ParsedEmail):
                if mine is None:  # found stored when the batch began: written only if it turns out new
                    mine = write_message_files(item.raw, parsed.attachments, ahead=False)
                try:
                    sent.append(_send(pipeline, inbox, item, parsed, lookups, ids, mine, archive=archive))
                except Exception:  # its own error, or an earlier message's that surfaced now
                    sent.append(_Sent(item, parsed, mine))
                    ending, pipeline = pipeline, None  # the rest of this batch one by one
                    again = yield from _settle(ending, sent, inbox, ids, _parsed(pending), archive=archive)
                    lookups = lookups if again is None else again
                    continue
                if meanwhile is not None:
                    meanwhile()
                while sent and sent[0].committed:
                    yield _finish(sent.popleft())
                continue
            resume = pipeline is not None
            if pipeline is not None:  # a message for the quarantine: what is under way settles first
                ending, pipeline = pipeline, None
                again = yield from _settle(ending, sent, inbox, ids, _parsed(pending), archive=archive)
                resume, lookups = again is None, lookups if again is None else again
            yield item, _ingest_one(inbox, item, parsed, lookups, ids, mine, archive=archive, meanwhile=meanwhile)
            if resume:  # after it: the quarantine's own transaction is not for a pipeline
                pipeline = TransactionPipeline.start(Message)
        if pipeline is not None:
            ending, pipeline = pipeline, None
            yield from _settle(ending, sent, inbox, ids, [], archive=archive)
    finally:
        if pipeline is not None:  # left early (an error raised, the caller stopped): end it
            pipeline.end()
        for unclaimed in files:
            if unclaimed is not None:
                unclaimed.delete()


@dataclass
class _Sent:
    """A message whose transaction is in a TransactionPipeline, not yet confirmed."""

    item: IncomingEmail
    parsed: ParsedEmail
    files: MessageFiles
    result: IngestResult | None = None
    stored: _Stored | None = None  # None: found to be a duplicate
    commit: Commit | None = None  # None: its transaction did not get as far as its COMMIT

    @property
    def committed(self) -> bool:
        return self.commit is not None and self.commit.committed


def _send(pipeline: TransactionPipeline, inbox: Inbox, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups,
          ids: ReservedIds, files: MessageFiles, *, archive: bool) -> _Sent:
    """Send a message's transaction. The batch remembers it at once, so that later messages
    thread to it; should it not commit, every later one is stored again (see _settle)."""
    with pipeline.transaction() as commit:
        result, stored = _store(inbox, item, parsed, lookups, ids, files, archive=archive)
    if stored is not None:
        stored.remember(lookups)
    return _Sent(item, parsed, files, result, stored, commit)


def _finish(sent: _Sent) -> tuple[IncomingEmail, IngestResult]:
    """A message whose COMMIT is confirmed: announce it; a duplicate's files were never needed."""
    if sent.stored is not None:
        sent.stored.announce()
    else:
        sent.files.delete()
    return sent.item, sent.result


def _settle(pipeline: TransactionPipeline, sent: deque[_Sent], inbox: Inbox, ids: ReservedIds,
            later: list[ParsedEmail], *, archive: bool) -> Generator[
        tuple[IncomingEmail, IngestResult], None, Lookups | None]:
    """End the pipeline; yield the messages that committed, in order, then store the others
    again one by one (their transactions were rolled back or never ran), with lookups made
    afresh for them and the `later` messages of the batch, which are returned (None when
    nothing had to be stored again)."""
    broken = None
    try:
        pipeline.end()
    except Exception as error:  # the connection failed: what committed is still told, then the error
        broken = error
    # A message is yielded only if its own COMMIT said so. When the connection broke, whether
    # the rest committed is unknown: their files stay (an orphan file at worst, never a row
    # without its file) and the caller, not moving its cursor, offers them again.
    while sent and sent[0].committed:
        yield _finish(sent.popleft())
    redo = list(sent)
    sent.clear()
    if broken is not None:
        raise broken
    if not redo:
        return None
    lookups = _lookups(inbox, [again.parsed for again in redo] + later)
    for again in redo:
        yield again.item, _ingest_one(inbox, again.item, again.parsed, lookups, ids, again.files, archive=archive)
    return lookups


def _parsed(pending: list) -> list[ParsedEmail]:
    return [entry[1] for entry in pending if entry is not None and isinstance(entry[1], ParsedEmail)]


def _reserve_ids(new: list[ParsedEmail]) -> ReservedIds:
    """Keys for the rows the batch's new messages may need: each stores without a round trip per row."""
    count = len(new)
    return ReservedIds({Contact: count, Conversation: count, Message: count,
                        Attachment: sum(len(parsed.attachments) for parsed in new)})


def _lookups(inbox: Inbox, batch: list[ParsedEmail]) -> Lookups:
    # Atomic, so that a failing lookup (database down) inside a caller's transaction rolls back
    # only itself, as the per-message transactions do.
    with transaction.atomic():
        return Lookups(inbox, batch)


def _over_limit(inbox: Inbox, item: IncomingEmail) -> bool:
    return not item.too_large and len(item.raw) > (inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES)


def _parse(inbox: Inbox, item: IncomingEmail, own: frozenset[str],
           parsed: ParsedEmail | None = None) -> ParsedEmail | Exception:
    """The parsed message (`parsed`, when the helper did it), or the error that sends it to the quarantine."""
    limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
    try:
        if _over_limit(inbox, item):
            # Every resource is bounded: a message this size is kept raw, not parsed in memory.
            raise MessageTooLarge(
                f"The message is {_size(len(item.raw))}, over the limit of {_size(limit)}; it was kept but "
                "not read. Raise the inbox's size limit and retry it."
            )
        if parsed is None:
            parsed = parse_email(item.raw, own_addresses=own, headers_only=item.too_large)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as error:
        return error
    if item.too_large:
        parsed.text = _too_large_note(inbox, item.size or len(item.raw))
    return parsed


def _ingest_one(
    inbox: Inbox, item: IncomingEmail, parsed: ParsedEmail | Exception, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles | None, *, archive: bool, meanwhile: Callable[[], object] | None = None,
) -> IngestResult:
    try:
        if isinstance(parsed, Exception):
            raise parsed
        if files is None:  # found stored when the batch began: written only if it turns out new
            files = write_message_files(item.raw, parsed.attachments, ahead=False)
        return _store_with_retries(inbox, item, parsed, lookups, ids, files, archive=archive, meanwhile=meanwhile)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as error:
        logger.warning("Quarantined a message of inbox %s (UID %s): %s", inbox.pk, item.imap_uid, error)
        row = quarantine_message(
            inbox, item.raw, error, imap_folder=item.imap_folder, imap_uidvalidity=item.imap_uidvalidity,
            imap_uid=item.imap_uid, size=item.size,
        )
        return IngestResult(quarantined=row)


def retry_quarantined(quarantined_id: int) -> IngestResult:
    """Ingest a quarantined message again (after a fix); on success the row is marked retried."""
    row = QuarantinedMessage.objects.select_related("inbox").get(pk=quarantined_id)
    if row.status != QuarantineStatus.HELD:
        return IngestResult(message=row.message, quarantined=row)
    with row.raw.open("rb") as handle:
        raw = handle.read()
    item = IncomingEmail(raw, row.imap_folder, row.imap_uidvalidity, row.imap_uid, size=row.raw_size)
    try:
        parsed = _parse(row.inbox, item, own_addresses())
        if isinstance(parsed, Exception):
            raise parsed
        result = _store_with_retries(row.inbox, item, parsed, _lookups(row.inbox, [parsed]), ReservedIds({}),
                                     write_message_files(raw, parsed.attachments), archive=False)
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


def _store_with_retries(
    inbox: Inbox, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles, *, archive: bool, meanwhile: Callable[[], object] | None = None,
) -> IngestResult:
    """Store the message whose files are `files`; unless its rows committed, the files are deleted."""
    batch = lookups
    stored = None
    try:
        for attempt in range(_STORE_ATTEMPTS):
            try:
                # On PostgreSQL the message's statements and its COMMIT go out together.
                with atomic_pipelined(Message, meanwhile=meanwhile):
                    result, rows = _store(inbox, item, parsed, lookups, ids, files, archive=archive)
                    if rows is not None:
                        rows.announce()  # inside: its events and hooks wait for the commit
                # Only now: on PostgreSQL a failed statement may raise at the COMMIT, after _store.
                stored = rows
            except IntegrityError:
                # Another process stored this message (or its contact) between our look and our
                # insert; the unique constraint decided. Look again, in the database: it is a
                # duplicate now (or the contact exists).
                logger.info("Lost an insert race for %s in inbox %s; looking again", parsed.message_id, inbox.pk)
                if attempt == _STORE_ATTEMPTS - 1:
                    raise
                lookups = _lookups(inbox, [parsed])
                continue
            if stored is not None:
                stored.remember(batch)  # committed: later messages of the batch see it
            return result
        raise AssertionError("unreachable")
    finally:
        if stored is None:  # a duplicate, or the transaction failed: no row names these files
            files.delete()


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB" if size >= 1_048_576 else f"{size:,} bytes"


def _too_large_note(inbox: Inbox, size: int) -> str:
    limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
    return (
        f"This message is {_size(size)}, over the limit of {_size(limit)}; "
        "it was not downloaded. Its headers are kept; read it in the mailbox itself."
    )


@dataclass(frozen=True)
class _Stored:
    """What storing a message leaves for later: what the batch remembers, and what to announce."""

    message: Message
    known: KnownConversation
    contact: Contact
    inbox: Inbox
    result: IngestResult
    archive: bool

    def remember(self, lookups: Lookups) -> None:
        lookups.remember(self.message, self.known, self.contact)

    def announce(self) -> None:
        """Tell agents and hooked-in features, once the rows are committed (or inside the
        transaction, where on_commit defers them to its commit)."""
        if self.archive:
            return
        message, result = self.message, self.result
        _publish(message.conversation, message, result.conversation_created, result.reopened)
        if result.conversation_created:
            # Features such as acknowledgements hook in here without ingest knowing them.
            conversation_started.send(sender=Message, message_id=message.pk, inbox=self.inbox)


def _store(
    inbox: Inbox, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles, *, archive: bool,
) -> tuple[IngestResult, _Stored | None]:
    """The rows of one message, inside its transaction; also what the batch should remember."""
    duplicate, message_id, conflict = _dedup(lookups, parsed)
    if duplicate is not None:
        return IngestResult(message=duplicate, created=False), None
    contact = _contact(lookups, ids, parsed)
    now = timezone.now()
    when = (parsed.date or now) if archive else now
    choice = _choose(inbox, lookups, parsed, now=now, archive=archive)
    conversation, known, choice = _conversation(inbox, contact, lookups, ids, parsed, choice, now=now, when=when,
                                                archive=archive)
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
        to=parsed.to, cc=parsed.cc, bcc=parsed.bcc, reply_to=parsed.reply_to,
        subject=parsed.subject, text=parsed.text, html=parsed.html, sent_at=parsed.date, created_at=when,
        raw_sha256=raw_file.sha256, raw_size=item.size or len(item.raw),
        content_hash=parsed.content_hash, is_automatic=parsed.is_automatic,
        automatic_reason=parsed.automatic_reason, too_large=item.too_large,
        parse_problems="\n".join(problems), archived=archive,
        imap_folder=item.imap_folder, imap_uidvalidity=item.imap_uidvalidity, imap_uid=item.imap_uid,
        raw=raw_file.name,
    )
    insert_row(message)
    _save_attachments(message, ids, parsed, attachment_files)
    reopened = choice.action == Action.REOPEN
    result = IngestResult(
        message=message, created=True, conversation_created=created_conversation, reopened=reopened,
    )
    return result, _Stored(message, known, contact, inbox, result, archive=archive)


def _dedup(lookups: Lookups, parsed: ParsedEmail) -> tuple[Message | None, str, bool]:
    """(the stored copy of this message or None, the message_id to store it under, conflict)."""
    synthetic = synthetic_id(parsed)
    if not parsed.message_id:
        return lookups.stored(synthetic), synthetic, False
    existing = lookups.stored(parsed.message_id)
    if existing is None:
        return None, parsed.message_id, False
    # Our own sent message coming back (a copy in the inbox) and a header-only record of an
    # oversized message are that message, whatever the bytes say.
    if existing.content_hash == parsed.content_hash or existing.direction == Direction.OUT or existing.too_large:
        return existing, parsed.message_id, False
    return lookups.stored(synthetic), synthetic, True


def _contact(lookups: Lookups, ids: ReservedIds, parsed: ParsedEmail) -> Contact:
    contact = lookups.contact(sender_address(parsed))
    if contact is None:
        # No savepoint: when the same customer wrote to two inboxes at once and the other insert
        # won, the IntegrityError rolls this message back and the retry finds that contact.
        contact = Contact(pk=ids.take(Contact), address=sender_address(parsed), name=parsed.from_name)
        insert_row(contact)
        return contact
    if not contact.name and parsed.from_name:
        Contact.objects.filter(pk=contact.pk).update(name=parsed.from_name)
        contact = Contact(pk=contact.pk, address=contact.address, name=parsed.from_name,
                          created_at=contact.created_at)
    return contact


def _choose(inbox: Inbox, lookups: Lookups, parsed: ParsedEmail, *, now, archive: bool) -> ThreadChoice:
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
    return choose_conversation(
        sender=sender_address(parsed), thread_ids=ids, known_messages=known,
        token_conversations=lookups.token_conversations(ids, known), subject_conversation=subject_conversation,
        now=now, reopen_window=timedelta(days=settings.REOPEN_WINDOW_DAYS), archive=archive,
    )


def _conversation(
    inbox: Inbox, contact: Contact, lookups: Lookups, ids: ReservedIds, parsed: ParsedEmail, choice: ThreadChoice,
    *, now, when, archive: bool,
) -> tuple[Conversation, KnownConversation, ThreadChoice]:
    """The conversation to store the message in, as it is after this message; and the choice,
    decided again on the row's current state when that differs from what the choice assumed."""
    candidate = choice.conversation or choice.previous
    if candidate is not None:
        # The lock orders us with an agent closing or reopening it right now; its status as
        # read under the lock decides, not the batch's earlier reading.
        row = lock_row(Conversation, candidate.id,
                       ("public_id", "department_id", "status", "closed_at", "last_message_at"))
        current = known_conversation(row, candidate.contact_address)
        if current != candidate:
            lookups.update_conversation(current)
            choice = _choose(inbox, lookups, parsed, now=now, archive=archive)
        if choice.action != Action.NEW:
            return _join(row, current, choice, now=now, when=when, archive=archive)
    conversation = Conversation(
        pk=ids.take(Conversation), inbox=inbox, department_id=inbox.department_id, contact=contact,
        subject=strip_reply_prefix(parsed.subject)[:998] or parsed.subject,
        previous_id=choice.previous.id if choice.previous else None,
        archived=archive,
        # Imported history is done with; a reply to it reopens it or follows it up as usual.
        status=ConversationStatus.CLOSED if archive else ConversationStatus.OPEN,
        closed_at=when if archive else None,
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
        publish("conversation.created", conversation.department_id, ids)
    elif reopened:
        publish("conversation.updated", conversation.department_id, {**ids, "status": ConversationStatus.OPEN})
    publish("message.created", conversation.department_id, {**ids, "message": str(message.public_id)})
