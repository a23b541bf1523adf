"""poll_inbox: bring an inbox's new IMAP mail into conversations, exactly once, whatever fails.

Per batch: fetch → ingest each message (its own transaction, lookups shared by the batch) → advance the cursor (a
conditional UPDATE that never moves it backwards) → only then mark read or move on the server.
A crash anywhere before the cursor moved means the next poll fetches the batch again, and
ingest's dedup makes that harmless. One poller per inbox at a time, by a lock in Redis that the
poll renews while it runs. Whatever stops a poll (the server, the network, the database) ends
up as the inbox's last error, with a backoff that never comes sooner than the poll interval.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from config.redis import get_redis
from conversations.incoming.ingest import IncomingEmail, IngestResult, ParsedAhead, ingest_batch
from conversations.models import Message, QuarantinedMessage
from core.locks import RedisLock
from inboxes import imap
from inboxes.imap import FolderState, ImapSession, MessageInfo
from inboxes.imap_errors import TRANSIENT, ErrorKind, ImapError
from inboxes.models import AfterImport, ConnectionStatus, HistoryImport, Inbox

logger = logging.getLogger(__name__)


@dataclass
class PollResult:
    inbox_id: int
    skipped: str = ""
    fetched: int = 0
    created: int = 0
    duplicates: int = 0
    quarantined: int = 0
    too_large: int = 0
    history_imported: int = 0
    uidvalidity: int | None = None
    last_uid: int = 0
    backlog: int = 0
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        text = (f"fetched {self.fetched}, new {self.created}, duplicates {self.duplicates}, "
                f"quarantined {self.quarantined}, too large {self.too_large}, backlog {self.backlog}, "
                f"last UID {self.last_uid}")
        if self.history_imported:
            text += f", history {self.history_imported}"
        return f"{text}; error: {self.error}" if self.error else text


def poll_inbox(inbox_id: int, *, max_messages: int | None = None) -> PollResult:
    """Poll one inbox now. Returns what it did; a poll already running elsewhere means "skipped"."""
    lock = RedisLock(f"poll-inbox:{inbox_id}", settings.POLL_LOCK_SECONDS)
    if not lock.acquire():
        get_redis().delete(_queued_key(inbox_id))
        return PollResult(inbox_id, skipped="another poll of this inbox is running")
    try:
        # The attempt is recorded before beat may queue this inbox again, so a tick during a
        # long poll does not find it due and queue a second poll behind the lock.
        Inbox.objects.filter(pk=inbox_id).update(last_poll_at=timezone.now())
        get_redis().delete(_queued_key(inbox_id))
        inbox = Inbox.objects.filter(pk=inbox_id, active=True).first()
        if inbox is None:
            return PollResult(inbox_id, skipped="inbox missing or inactive")
        with lock.kept_alive():
            return _poll(inbox, max_messages)
    finally:
        lock.release()


def _poll(inbox: Inbox, max_messages: int | None) -> PollResult:
    result = PollResult(inbox.pk)
    deadline = time.monotonic() + settings.POLL_TIME_BUDGET_SECONDS
    try:
        with imap.connect(inbox) as session:
            state = session.select(inbox.imap_folder)
            result.uidvalidity = state.uidvalidity
            _import_new(session, inbox, state, result, deadline, max_messages)
            if inbox.history_cutoff and inbox.history_status in (HistoryImport.PENDING, HistoryImport.RUNNING):
                _import_history(session, inbox, state, result, deadline)
    except ImapError as error:
        _record_failure(inbox, str(error), error.kind)
        result.error = str(error)
        logger.warning("Polling %s failed: %s", inbox.address, error)
    except Exception as error:
        # Not the server's doing (a database gone away, a bug): still the inbox's last error, so
        # that it shows; nothing is lost, because the cursor moved only past committed mail.
        logger.exception("Polling %s failed", inbox.address)
        result.error = _unexpected(error)
        _reconnect_if_broken()
        try:
            _record_failure(inbox, result.error, None)
        except Exception:
            logger.exception("Could not record the failed poll of %s", inbox.address)
            return result  # the database is still gone: what happened is in the log
    else:
        inbox.mark_connected()
        Inbox.objects.filter(pk=inbox.pk).update(backlog=result.backlog)
    result.last_uid = Inbox.objects.values_list("last_uid", flat=True).get(pk=inbox.pk)
    return result


# --- new mail -------------------------------------------------------------------------------
def _import_new(session: ImapSession, inbox: Inbox, state: FolderState, result: PollResult,
                deadline: float, max_messages: int | None) -> None:
    cursor = _sync_cursor(session, inbox, state)
    uids = session.search("ALL", after_uid=cursor)
    result.backlog = total = len(uids)
    if max_messages is not None:
        uids = uids[:max_messages]
    # Each batch is fetched before the one ahead of it is stored, and parsed while that one's
    # messages commit (ingest_batch's meanwhile), when the two fit in POLL_BATCH_BYTES together:
    # a worker never holds more fetched mail than that (or one larger message alone). Storing,
    # the cursor and marking read keep their order: each batch only after the one before it.
    batches = _planned_batches(session, uids, deadline)
    current = next(batches, None)
    while current is not None:
        messages = current.messages if current.messages is not None else _fetch(session, inbox, state, current.infos)
        following = next(batches, None)
        if following is not None and current.size + following.size <= settings.POLL_BATCH_BYTES:
            following.messages = _fetch(session, inbox, state, following.infos)
        ahead = following.messages if following is not None else None
        committed = _ingest(inbox, messages, result, archive=False,
                            meanwhile=ahead.parse_one if ahead is not None else None)
        _advance_cursor(inbox, state.uidvalidity, current.advance_to)
        _after_import(session, inbox, committed)
        result.backlog = total - current.behind
        current = following


@dataclass
class _Planned:
    infos: list[MessageInfo]
    advance_to: int  # the cursor once these are stored: past UIDs that vanished since the search too
    behind: int  # how many of the search's UIDs are done once these are stored
    messages: ParsedAhead | None = None  # once fetched

    @property
    def size(self) -> int:
        return sum(info.size for info in self.infos)


def _planned_batches(session: ImapSession, uids: list[int], deadline: float) -> Iterator[_Planned]:
    """The batches to fetch, in UID order (sizes known, bodies not fetched yet)."""
    done = 0
    for chunk in _chunks(uids, settings.POLL_BATCH_SIZE):
        if done and time.monotonic() > deadline:
            return  # the rest is the backlog, for the next poll
        batches = list(_batches(session.fetch_info(chunk))) or [[]]  # all vanished: still step past them
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            yield _Planned(batch, chunk[-1] if last else batch[-1].uid, done + len(chunk) if last else done)
        done += len(chunk)


def _sync_cursor(session: ImapSession, inbox: Inbox, state: FolderState) -> int:
    """The last UID imported, after choosing a start on the first poll or a new UIDVALIDITY."""
    if inbox.uidvalidity == state.uidvalidity:
        return inbox.last_uid
    # First poll, or the server renumbered the folder (RFC 3501 2.3.1.1): choose, once, the
    # first UID whose INTERNALDATE is on or after import_since and take it from there. After a
    # renumbering that re-scans everything that was ever in scope; dedup drops what we have.
    since = session.uids_since(inbox.import_since)
    if since:
        start = since[0].uid - 1
    elif state.uidnext:
        start = state.uidnext - 1  # everything present is older; anything newer gets a higher UID
    else:
        existing = session.search("ALL")
        start = existing[-1] if existing else 0
    changes: dict[str, object] = {"uidvalidity": state.uidvalidity, "last_uid": start}
    if inbox.uidvalidity is not None:
        logger.warning("UIDVALIDITY of %s changed from %s to %s: re-scanning the folder",
                       inbox.address, inbox.uidvalidity, state.uidvalidity)
        now = timezone.now()
        changes.update(uidvalidity_changed_at=now, last_notice=(
            f"On {now:%Y-%m-%d %H:%M} UTC the server renumbered the folder “{state.name}” (UIDVALIDITY "
            f"{inbox.uidvalidity} became {state.uidvalidity}), as servers do after a restore or a "
            "migration. Switchboard looked through the folder again; mail already imported was not "
            "imported twice."))
    Inbox.objects.filter(pk=inbox.pk, uidvalidity=inbox.uidvalidity).update(**changes)
    inbox.uidvalidity, inbox.last_uid = state.uidvalidity, start
    return start


def _advance_cursor(inbox: Inbox, uidvalidity: int, uid: int) -> None:
    # Conditional: never backwards, and never for a UIDVALIDITY that is no longer current.
    Inbox.objects.filter(pk=inbox.pk, uidvalidity=uidvalidity, last_uid__lt=uid).update(last_uid=uid)


def _after_import(session: ImapSession, inbox: Inbox, uids: list[int]) -> None:
    """Mark read or move what was committed. If this fails the mail stays as it was: nothing lost."""
    if inbox.after_import == AfterImport.MARK_READ:
        session.mark_seen(uids)
    elif inbox.after_import == AfterImport.MOVE and inbox.after_import_folder:
        session.move(uids, inbox.after_import_folder)


# --- one batch --------------------------------------------------------------------------------
def _fetch(session: ImapSession, inbox: Inbox, state: FolderState, batch: list[MessageInfo]) -> ParsedAhead:
    """A batch's messages in UID order: whole, or only the headers of those over the size limit."""
    limit = inbox.max_message_bytes or settings.MAX_MESSAGE_BYTES
    sizes = {info.uid: info.size for info in batch}
    large = [info.uid for info in batch if info.size > limit]
    headers = dict(session.fetch(large, headers_only=True))
    return ParsedAhead(inbox, [
        IncomingEmail(raw, state.name, state.uidvalidity, uid, too_large, sizes.get(uid))
        for uid, raw, too_large in _merge(session.fetch([i.uid for i in batch if i.size <= limit]), headers)
    ])


def _ingest(inbox: Inbox, messages: ParsedAhead, result: PollResult, *, archive: bool,
            meanwhile: Callable[[], object] | None = None) -> list[int]:
    """Ingest a fetched batch in UID order; return the UIDs whose rows are committed."""
    committed = []
    for item, outcome in ingest_batch(inbox, messages, archive=archive, meanwhile=meanwhile):
        _count(result, outcome, item.too_large)
        committed.append(item.imap_uid)
    return committed


def _merge(bodies: Iterator[tuple[int, bytes]], headers: dict[int, bytes]) -> Iterator[tuple[int, bytes, bool]]:
    """Full messages and header-only ones, together in UID order (so replies follow their originals)."""
    for uid, raw in bodies:
        for small in sorted(u for u in headers if u < uid):
            yield small, headers.pop(small), True
        yield uid, raw, False
    for uid in sorted(headers):
        yield uid, headers[uid], True


def _count(result: PollResult, outcome: IngestResult, too_large: bool) -> None:
    result.fetched += 1
    if outcome.quarantined is not None:
        result.quarantined += 1
    elif outcome.created:
        result.created += 1
        result.too_large += int(too_large)
    else:
        result.duplicates += 1


_Item = TypeVar("_Item")


def _chunks(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _batches(infos: list[MessageInfo]) -> Iterator[list[MessageInfo]]:
    """Split by bytes too, so that a batch of big messages does not fill the worker's memory."""
    batch: list[MessageInfo] = []
    total = 0
    for info in infos:
        if batch and total + info.size > settings.POLL_BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(info)
        total += info.size
    if batch:
        yield batch


# --- history -------------------------------------------------------------------------------
def _import_history(session: ImapSession, inbox: Inbox, state: FolderState, result: PollResult,
                    deadline: float) -> None:
    """Older mail back to history_cutoff, archived (stored, not routed), resumable across polls."""
    cutoff = dt.datetime.combine(inbox.history_cutoff, dt.time.min, tzinfo=timezone.get_current_timezone())
    in_range = [info for info in session.uids_since(cutoff) if info.internaldate < inbox.import_since]
    stored = _stored_uids(inbox, state, [info.uid for info in in_range])
    remaining = [info for info in in_range if info.uid not in stored]
    total = len(in_range)
    Inbox.objects.filter(pk=inbox.pk).update(
        history_status=HistoryImport.RUNNING, history_total=total, history_done=total - len(remaining))
    for chunk in _chunks(remaining, settings.POLL_BATCH_SIZE):
        if time.monotonic() > deadline:
            return  # resumed by the next poll: what is stored is recognised by its UID
        for batch in _batches(chunk):
            _ingest(inbox, _fetch(session, inbox, state, batch), result, archive=True)
            result.history_imported += len(batch)
        Inbox.objects.filter(pk=inbox.pk).update(history_done=total - len(remaining) + result.history_imported)
    Inbox.objects.filter(pk=inbox.pk).update(history_status=HistoryImport.DONE, history_done=total)


def _stored_uids(inbox: Inbox, state: FolderState, uids: list[int]) -> set[int]:
    where = Q(inbox=inbox, imap_folder=state.name, imap_uidvalidity=state.uidvalidity, imap_uid__in=uids)
    found = set(Message.objects.filter(where).values_list("imap_uid", flat=True))
    return found | set(QuarantinedMessage.objects.filter(where).values_list("imap_uid", flat=True))


# --- health and scheduling -------------------------------------------------------------------
def _record_failure(inbox: Inbox, message: str, kind: ErrorKind | None) -> None:
    """Back off; a throttling server shows as Throttled, a refused login or TLS failure as Error.

    `kind` None: a failure on our side (the database), passing like a network error.
    """
    failures = inbox.consecutive_failures + 1
    throttled = kind == ErrorKind.THROTTLED
    delay = backoff_seconds(inbox.poll_interval, failures, throttled=throttled)
    now = timezone.now()
    if throttled:
        message += f" Next try in about {round(delay / 60)} minutes."
    changes = {"consecutive_failures": failures, "next_poll_at": now + dt.timedelta(seconds=delay),
               "last_error": message, "last_error_at": now, "last_poll_at": now}
    if throttled:
        changes["connection_status"] = ConnectionStatus.THROTTLED
    elif kind is not None and kind not in TRANSIENT:
        changes["connection_status"] = ConnectionStatus.ERROR
    Inbox.objects.filter(pk=inbox.pk).update(**changes)


def backoff_seconds(poll_interval: int, failures: int, *, throttled: bool = False) -> float:
    """Doubling from the poll interval (from minutes, when throttled), capped, plus up to a quarter.

    The jitter only ever adds, so that inboxes on one server do not retry in step and no retry
    comes sooner than the inbox would have polled anyway.
    """
    base = max(10, poll_interval, settings.POLL_THROTTLE_BACKOFF_SECONDS if throttled else 0)
    delay = min(max(base, settings.POLL_BACKOFF_MAX_SECONDS), base * 2 ** min(failures - 1, 20))
    return delay * random.uniform(1.0, 1.25)


def _unexpected(error: Exception) -> str:
    words = (str(error).strip().splitlines() or [""])[0][:300]
    # Django wraps the driver's errors in its own; the pipelined rows (core.rows) raise the driver's.
    database = isinstance(error, DatabaseError | connection.Database.Error)
    return (f"The poll stopped because {'the database failed' if database else 'of an unexpected error'} "
            f"({type(error).__name__}: {words}). Nothing was lost: mail not yet imported stays on the "
            "server, and the next poll picks it up.")


def _reconnect_if_broken() -> None:
    """After a database error the connection may be dead (a restarted server, a killed session).

    Django reconnects only between requests; a poll must record its error now. Inside a
    transaction (tests wrap theirs) the connection is not ours to drop.
    """
    if connection.connection is not None and not connection.in_atomic_block and not connection.is_usable():
        connection.close()


def list_due_inboxes(now: dt.datetime | None = None) -> list[int]:
    """Active inboxes whose interval has elapsed (or that have a backlog) and whose backoff passed.

    "Elapsed" looks one beat tick ahead: an inbox whose interval ends before beat looks again is
    polled now, so a poll never starts later than its interval after the last one ended (beat
    looks every POLL_TICK_SECONDS; without the look ahead, a 60 s interval and a 10 s tick
    meant a poll every 70 s).
    """
    now = now or timezone.now()
    ahead = now + dt.timedelta(seconds=settings.POLL_TICK_SECONDS)
    rows = (Inbox.objects.filter(active=True).exclude(imap_host="")
            .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
            .values_list("pk", "last_poll_at", "poll_interval", "backlog", "next_poll_at"))
    # A next_poll_at that has passed is due by itself: a backoff that ended, or settings just saved.
    return [pk for pk, last, interval, backlog, next_at in rows
            if next_at or last is None or backlog or last + dt.timedelta(seconds=interval) <= ahead]


def claim_poll(inbox_id: int, seconds: int) -> bool:
    """True once per inbox until its poll starts: beat does not pile up polls behind a busy queue."""
    return bool(get_redis().set(_queued_key(inbox_id), "1", nx=True, ex=max(1, seconds)))


def _queued_key(inbox_id: int) -> str:
    return f"switchboard:poll-queued:{inbox_id}"
