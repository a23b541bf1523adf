"""The machinery that stores a batch of messages quickly, behind the per-message rules of ingest.

conversations.incoming.ingest says what one message's rows are (dedup, contact, thread,
conversation, quarantine); it hands this module a `Rules` object and gets back each message once
committed. Here: parsing ahead (ParsedAhead, the parse helper process), the batch's lookups
(loaded once), the files written by a few file threads while earlier messages are stored,
reserved primary keys, and on PostgreSQL a TransactionPipeline that sends each message's
transaction without waiting for the one before it to be confirmed.

Files (the raw message, attachments) are written before the rows that name them; when a message
is not stored (a duplicate, quarantined, a failed transaction) its files are deleted. A process
killed in between can leave an orphan file, never a row without its file.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, InterfaceError, InternalError, OperationalError, ProgrammingError, transaction

from conversations.incoming.files import MessageFiles, write_message_files
from conversations.incoming.lookups import Lookups, own_addresses
from conversations.incoming.quarantine import PlainWordsError
from conversations.models import Attachment, Contact, Conversation, Message, QuarantinedMessage
from core.rows import Commit, ReservedIds, TransactionPipeline, atomic_pipelined
from inboxes.mailformat import parse_pool
from inboxes.mailformat.parsing import ParsedEmail, parse_email
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


class Stored(Protocol):
    """What storing one message leaves for after its transaction."""

    def remember(self, lookups: Lookups) -> None:
        """Tell the batch's lookups, so later messages dedup and thread against it."""

    def announce(self) -> None:
        """Publish its events (after commit, or deferred to the commit by on_commit)."""


class Rules(ABC):
    """The per-message rules the machinery calls: what to store, and what to do with bad mail."""

    def __init__(self, inbox: Inbox, *, archive: bool) -> None:
        self.inbox = inbox
        self.archive = archive

    @abstractmethod
    def is_stored(self, lookups: Lookups, parsed: ParsedEmail) -> bool:
        """Whether the message is already stored (its files need not be written ahead)."""

    @abstractmethod
    def store(self, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
              files: MessageFiles) -> tuple[IngestResult, Stored | None]:
        """Write the message's rows inside the transaction the machinery opened (None: a duplicate)."""

    @abstractmethod
    def quarantine(self, item: IncomingEmail, error: Exception) -> IngestResult:
        """Keep a message that could not be parsed or stored, with its error."""


class ParsedAhead:
    """A batch's messages, parsed ahead of their turn.

    Created, the batch starts parsing in the helper process (inboxes.mailformat.parse_pool), while
    the worker stores the batch before it. What the helper does not take is parsed here, one
    at a time whenever the caller has a moment to spare: a poller passes `parse_one` as
    `ingest_batch(meanwhile=...)`. Parsing needs no database, so it can run inside another
    message's transaction. It never raises: an error is kept and raised (or quarantined) at the
    message's own turn, as if it were parsed then.
    """

    def __init__(self, inbox: Inbox, items: Iterable[IncomingEmail]) -> None:
        self.inbox = inbox
        self.items = list(items)
        self.own = own_addresses()
        self._parsed: list[ParsedEmail | Exception | _Failed] = []
        self._helper = [None if _over_limit(inbox, item) else
                        parse_pool.submit(item.raw, headers_only=item.too_large, own_addresses=self.own)
                        for item in self.items]

    def parse_one(self) -> bool:
        """Parse the next message not parsed yet; False when there is none left."""
        index = len(self._parsed)
        if index >= len(self.items):
            return False
        item, helper = self.items[index], self._helper[index]
        self._helper[index] = None
        try:
            self._parsed.append(parse_incoming(self.inbox, item, self.own,
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


def run_batch(
    rules: Rules, items: Iterable[IncomingEmail] | ParsedAhead, *, meanwhile: Callable[[], object] | None = None,
) -> Iterator[tuple[IncomingEmail, IngestResult]]:
    """Store messages in order, each in its own transaction, yielding each once it is committed.

    What the messages need of stored rows is loaded once for the batch (Lookups). An
    infrastructure error raises out of the iteration: what was yielded before it is committed,
    the rest is not. `meanwhile`: see ingest.ingest_batch.
    """
    inbox = rules.inbox
    ahead = items if isinstance(items, ParsedAhead) else ParsedAhead(inbox, items)
    pending: list[tuple[IncomingEmail, ParsedEmail | Exception] | None] = list(ahead.entries())
    lookups = load_lookups(inbox, [parsed for _item, parsed in pending if isinstance(parsed, ParsedEmail)],
                           own=ahead.own)
    # The files of the messages that are not already stored start on the file threads now; each
    # message waits for its own just before its rows. What is left unclaimed is deleted.
    new = [isinstance(parsed, ParsedEmail) and not rules.is_stored(lookups, parsed) for _item, parsed in pending]
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
                    sent.append(_send(pipeline, rules, item, parsed, lookups, ids, mine))
                except Exception:  # its own error, or an earlier message's that surfaced now
                    sent.append(_Sent(item, parsed, mine))
                    ending, pipeline = pipeline, None  # the rest of this batch one by one
                    again = yield from _settle(ending, sent, rules, ids, _parsed(pending))
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
                again = yield from _settle(ending, sent, rules, ids, _parsed(pending))
                resume, lookups = again is None, lookups if again is None else again
            yield item, _ingest_one(rules, item, parsed, lookups, ids, mine, meanwhile=meanwhile)
            if resume:  # after it: the quarantine's own transaction is not for a pipeline
                pipeline = TransactionPipeline.start(Message)
        if pipeline is not None:
            ending, pipeline = pipeline, None
            yield from _settle(ending, sent, rules, ids, [])
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
    stored: Stored | None = None  # None: found to be a duplicate
    commit: Commit | None = None  # None: its transaction did not get as far as its COMMIT

    @property
    def committed(self) -> bool:
        return self.commit is not None and self.commit.committed


def _send(pipeline: TransactionPipeline, rules: Rules, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups,
          ids: ReservedIds, files: MessageFiles) -> _Sent:
    """Send a message's transaction. The batch remembers it at once, so that later messages
    thread to it; should it not commit, every later one is stored again (see _settle)."""
    with pipeline.transaction() as commit:
        result, stored = rules.store(item, parsed, lookups, ids, files)
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


def _settle(pipeline: TransactionPipeline, sent: deque[_Sent], rules: Rules, ids: ReservedIds,
            later: list[ParsedEmail]) -> Generator[tuple[IncomingEmail, IngestResult], None, Lookups | None]:
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
    lookups = load_lookups(rules.inbox, [again.parsed for again in redo] + later)
    for again in redo:
        yield again.item, _ingest_one(rules, again.item, again.parsed, lookups, ids, again.files)
    return lookups


def _parsed(pending: list) -> list[ParsedEmail]:
    return [entry[1] for entry in pending if entry is not None and isinstance(entry[1], ParsedEmail)]


def _reserve_ids(new: list[ParsedEmail]) -> ReservedIds:
    """Keys for the rows the batch's new messages may need: each stores without a round trip per row."""
    count = len(new)
    return ReservedIds({Contact: count, Conversation: count, Message: count,
                        Attachment: sum(len(parsed.attachments) for parsed in new)})


def load_lookups(inbox: Inbox, batch: list[ParsedEmail], *, own: frozenset[str] | None = None) -> Lookups:
    # Atomic, so that a failing lookup (database down) inside a caller's transaction rolls back
    # only itself, as the per-message transactions do.
    with transaction.atomic():
        return Lookups(inbox, batch, own=own)


def _over_limit(inbox: Inbox, item: IncomingEmail) -> bool:
    return not item.too_large and len(item.raw) > (inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES)


def parse_incoming(inbox: Inbox, item: IncomingEmail, own: frozenset[str],
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
    rules: Rules, item: IncomingEmail, parsed: ParsedEmail | Exception, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles | None, *, meanwhile: Callable[[], object] | None = None,
) -> IngestResult:
    """One message in its own transaction; bad content goes to the quarantine, infrastructure errors raise."""
    try:
        if isinstance(parsed, Exception):
            raise parsed
        if files is None:  # found stored when the batch began: written only if it turns out new
            files = write_message_files(item.raw, parsed.attachments, ahead=False)
        return store_with_retries(rules, item, parsed, lookups, ids, files, meanwhile=meanwhile)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as error:
        return rules.quarantine(item, error)


def store_with_retries(
    rules: Rules, item: IncomingEmail, parsed: ParsedEmail, lookups: Lookups, ids: ReservedIds,
    files: MessageFiles, *, meanwhile: Callable[[], object] | None = None,
) -> IngestResult:
    """Store the message whose files are `files`; unless its rows committed, the files are deleted."""
    batch = lookups
    stored = None
    try:
        for attempt in range(_STORE_ATTEMPTS):
            try:
                # On PostgreSQL the message's statements and its COMMIT go out together.
                with atomic_pipelined(Message, meanwhile=meanwhile):
                    result, rows = rules.store(item, parsed, lookups, ids, files)
                    if rows is not None:
                        rows.announce()  # inside: its events and hooks wait for the commit
                # Only now: on PostgreSQL a failed statement may raise at the COMMIT, after store.
                stored = rows
            except IntegrityError:
                # Another process stored this message (or its contact) between our look and our
                # insert; the unique constraint decided. Look again, in the database: it is a
                # duplicate now (or the contact exists).
                logger.info("Lost an insert race for %s in inbox %s; looking again", parsed.message_id,
                            rules.inbox.pk)
                if attempt == _STORE_ATTEMPTS - 1:
                    raise
                lookups = load_lookups(rules.inbox, [parsed])
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
