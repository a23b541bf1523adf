"""Deliver outgoing messages exactly once, or say they might not have left.

queued → sending → sent | failed | uncertain, each step a conditional UPDATE. `data_sent_at` is
written just before the message data goes to the server: a worker that dies after that
point leaves a message the server may have, which becomes uncertain rather than being sent
again. Every status change is appended to `delivery_history` and published as
`message.status`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from email.message import Message as MIMEMessage
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from conversations.events import publish
from conversations.models import Attachment, Conversation, DeliveryStatus, Direction, Message, MessageKind
from conversations.outgoing import ascii_address, build_email, envelope_recipients, mime_message
from conversations.rows import (
    by_primary_key,
    columns_and_converters,
    convert,
    only_filter,
    update_row,
    update_rows,
)
from inboxes import smtp
from inboxes.models import Inbox, OutgoingMethod

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
# A queued message without next_attempt_at had its task enqueued on commit; the sweeper
# dispatches it again only when that task looks lost.
LOST_TASK_SECONDS = 120
INACTIVE = "the inbox is inactive"
OVER_CAP = "hourly sending limit reached"
# A drain claims up to this many queued rows at a time, and gives up after this many claims in
# a row lost to other workers.
DRAIN_CLAIM_BATCH = 20
DRAIN_CLAIM_RETRIES = 40
_TABLE = f'"{Message._meta.db_table}"'


@dataclass
class Outcome:
    status: str  # a DeliveryStatus, or "not claimed" / "deferred"
    detail: str = ""
    retry_at: dt.datetime | None = None


def _entry(now: dt.datetime, old: str, new: str, detail: str) -> dict[str, Any]:
    return {"at": now.isoformat(), "from": old, "to": new, "detail": detail[:2000]}


def _publish_status(message: Message, status: str, detail: str = "") -> None:
    publish("message.status", message.conversation.department_id, {
        "conversation": str(message.conversation.public_id), "message": str(message.public_id),
        "status": status, "detail": detail[:500], "attempts": message.delivery_attempts,
    })


def backoff_seconds(attempt: int) -> float:
    """Exponential from DELIVERY_RETRY_BASE_SECONDS, capped, with jitter so retries do not march in step."""
    base = float(settings.DELIVERY_RETRY_BASE_SECONDS)
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.75, 1.25)


# ---------------------------------------------------------------------------
# Loading: only what the email, the claim and the events need, in one query
# ---------------------------------------------------------------------------
_FIELDS = ("id", "public_id", "conversation_id", "inbox_id", "direction", "kind", "message_id", "in_reply_to",
           "references", "from_address", "from_name", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
           "sent_at", "created_at", "priority", "is_automatic", "delivery_status", "delivery_attempts",
           "delivery_history", "queued_at", "next_attempt_at", "raw")


def _load(message_id: int) -> list[Message]:
    """The outgoing email `message_id` with its inbox, lean: whole rows with every related column cost ~2.4 ms.

    The conversation's few fields ride along as annotations (public id and department for the
    events, created_at for Thread-Index), and whether the message has attachments, so the build
    skips that query when it has none.
    """
    queryset = (
        Message.objects.filter(pk=message_id, direction=Direction.OUT, kind=MessageKind.EMAIL)
        .only(*_FIELDS, "inbox").select_related("inbox")
        .annotate(_conversation_public_id=F("conversation__public_id"),
                  _conversation_department_id=F("conversation__department_id"),
                  _conversation_created_at=F("conversation__created_at"),
                  has_attachments=Exists(Attachment.objects.filter(message_id=OuterRef("pk"))))
    )
    messages = list(queryset[:1])
    for message in messages:
        message.conversation = Conversation(
            pk=message.conversation_id, public_id=message._conversation_public_id,
            department_id=message._conversation_department_id, created_at=message._conversation_created_at)
    return messages


_CONVERSATION_FIELDS = ("public_id", "department_id", "created_at")
# Model.from_db takes the values in the model's field order.
_FIELDS_IN_ORDER = tuple(field.attname for field in Message._meta.concrete_fields
                         if field.name in _FIELDS or field.attname in _FIELDS)


@cache
def _next_queued_statement(alias: str, newest_first: bool) -> tuple[str, list, list, list, list]:
    """What `_next_queued` runs: the statement, and the columns and converters of both tables."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    message_columns, message_converters = columns_and_converters(Message, _FIELDS_IN_ORDER, alias)
    conversation_columns, conversation_converters = columns_and_converters(Conversation, _CONVERSATION_FIELDS, alias)
    message, conversation = quote(Message._meta.db_table), quote(Conversation._meta.db_table)
    attachment = quote(Attachment._meta.db_table)
    selected = ", ".join(f"{quote(column.alias)}.{quote(column.target.column)}"
                         for column in [*message_columns, *conversation_columns])
    # The literal status matches the partial index message_queued_per_inbox, which SQLite then
    # uses; identifiers and literals are ours, every value is a parameter.
    sql = (
        f"SELECT {selected}, EXISTS(SELECT 1 FROM {attachment} WHERE {attachment}.{quote('message_id')} "  # noqa: S608
        f"= {message}.{quote('id')}) FROM {message} INNER JOIN {conversation} "
        f"ON {conversation}.{quote('id')} = {message}.{quote('conversation_id')} "
        f"WHERE {message}.{quote('delivery_status')} = '{DeliveryStatus.QUEUED}' "
        f"AND {message}.{quote('inbox_id')} = %s "
        f"AND {message}.{quote('direction')} = %s AND {message}.{quote('kind')} = %s "
        f"AND ({message}.{quote('next_attempt_at')} IS NULL OR {message}.{quote('next_attempt_at')} <= %s) "
        f"ORDER BY {message}.{quote('id')} {'DESC' if newest_first else 'ASC'} LIMIT %s"
    )
    return sql, message_columns, message_converters, conversation_columns, conversation_converters


def _next_queued(inbox: Inbox, now: dt.datetime, *, newest_first: bool, limit: int) -> list[Message]:
    """The inbox's next queued, due emails, loaded as `_load` loads one (without the inbox); one cached statement.

    A drain reads these every DRAIN_CLAIM_BATCH messages: through the ORM, compiling the query
    and building the rows took ~4 ms, twenty times what the database took.
    """
    alias = router.db_for_read(Message)
    connection = connections[alias]
    sql, message_columns, message_converters, conversation_columns, conversation_converters = (
        _next_queued_statement(alias, newest_first))
    with connection.cursor() as cursor:
        cursor.execute(sql, [inbox.pk, Direction.OUT, MessageKind.EMAIL,
                             connection.ops.adapt_datetimefield_value(now), limit])
        rows = cursor.fetchall()
    split = len(_FIELDS_IN_ORDER)
    messages = []
    for row in rows:
        values = convert(row[:split], message_columns, message_converters, alias)
        message = Message.from_db(alias, _FIELDS_IN_ORDER, values)
        public_id, department_id, created_at = convert(row[split:-1], conversation_columns,
                                                       conversation_converters, alias)
        message.conversation = Conversation(pk=message.conversation_id, public_id=public_id,
                                            department_id=department_id, created_at=created_at)
        message.has_attachments = bool(row[-1])
        messages.append(message)
    return messages


# ---------------------------------------------------------------------------
# Building: the email of a message
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Built:
    mime: MIMEMessage | None  # None when `data` was composed at queue time
    recipients: list[str]
    data: bytes | None  # flattened, when the envelope is plain ASCII (smtp.flatten)


def _build(message: Message) -> _Built:
    """The message's email: the bytes composed when it was queued (`raw`), or built now."""
    recipients = envelope_recipients(message)
    plain = not smtp.needs_smtputf8(ascii_address(message.inbox.address), recipients)
    if plain and message.raw:
        with message.raw.open("rb") as handle:
            return _Built(None, recipients, handle.read())
    mime = mime_message(build_email(message))
    return _Built(mime, recipients, smtp.flatten(mime) if plain else None)


# ---------------------------------------------------------------------------
# Delivering one message
# ---------------------------------------------------------------------------
def deliver_message(message_id: int, *, reuse_connection: bool = False) -> Outcome:
    """Claim one queued, due message and send it. Harmless to call twice: the second finds nothing."""
    found = _load(message_id)
    if not found:
        return Outcome("not claimed")
    return _deliver(found[0], found[0].inbox, timezone.now(), reuse_connection)


def _deliver(message: Message, inbox: Inbox, now: dt.datetime, reuse_connection: bool,
             later: _Later | None = None) -> Outcome:
    """Check, claim and send one loaded message; its own claim, data_sent_at and outcome writes."""
    message.inbox = inbox
    if message.delivery_status != DeliveryStatus.QUEUED:
        return Outcome("not claimed")
    if message.next_attempt_at and message.next_attempt_at > now:
        return Outcome("not claimed", "not due yet", retry_at=message.next_attempt_at)
    waiting, _ = _must_wait(inbox, message, now)
    if waiting is not None:
        return waiting

    # The claim: only one worker moves this row, at this attempt count, out of queued, and only
    # while it is due (a drain may hold a row read before another worker deferred it).
    claimed = update_row(
        Message, message.pk, where='"delivery_status" = %s AND "delivery_attempts" = %s '
                          'AND ("next_attempt_at" IS NULL OR "next_attempt_at" <= %s)',
        where_params=(DeliveryStatus.QUEUED, message.delivery_attempts, now), increment="delivery_attempts",
        delivery_status=DeliveryStatus.SENDING, sending_started_at=now, data_sent_at=None,
    )
    if not claimed:
        return Outcome("not claimed")
    message.delivery_attempts += 1
    message.delivery_status = DeliveryStatus.SENDING
    return _deliver_claimed(message, now, reuse_connection, later=later)


def _deliver_claimed(message: Message, claimed_at: dt.datetime, reuse_connection: bool,
                     later: _Later | None = None,
                     following: Message | None = None) -> Outcome:
    """Send a message this worker claimed (its row in sending, its attempt counted) and record the outcome.

    `later`: a drain's held-back "sent" write (`_Later`), which this message's writes carry.
    `following`: the message the drain sends next, whose envelope may go out behind this one.
    """
    inbox = message.inbox
    history = [*message.delivery_history, _entry(claimed_at, DeliveryStatus.QUEUED, DeliveryStatus.SENDING,
                                                 f"attempt {message.delivery_attempts}")]
    _publish_status(message, DeliveryStatus.SENDING)

    try:
        outcome = _send(message, history, reuse_connection, later, following)
    except smtp.DataSentNoAnswer as exc:
        outcome = _finish(message, history, DeliveryStatus.UNCERTAIN, str(exc), later,
                          delivery_last_error=str(exc))
    except smtp.PermanentError as exc:
        outcome = _finish(message, history, DeliveryStatus.FAILED, str(exc), later, delivery_last_error=str(exc),
                          delivery_server_reply=exc.reply)
    except smtp.TransientError as exc:
        outcome = _retry_or_give_up(message, history, exc, later)
    except Exception as exc:
        # Could not even build the email (a missing attachment file...): no retry will fix that.
        logger.exception("Could not deliver message %s", message.pk)
        detail = f"{type(exc).__name__}: {exc}"
        outcome = _finish(message, history, DeliveryStatus.FAILED, detail, later, delivery_last_error=detail)
    if outcome.status == DeliveryStatus.SENT and inbox.save_to_sent:
        _save_to_sent(message)
    return outcome


# ---------------------------------------------------------------------------
# Draining: one task delivers the inbox's queued messages over one connection
# ---------------------------------------------------------------------------
def deliver_and_drain(message_id: int) -> dict[int, Outcome]:
    """Deliver this message, then the inbox's next queued, due ones, over one connection.

    After the first message, the drain claims a few queued rows at once (one UPDATE for up to
    DRAIN_CLAIM_BATCH) and sends them in turn; each still has its own data_sent_at and outcome
    writes and its own events, so a crash anywhere is recovered by the sweeper exactly as for a
    single delivery (a claimed message whose data never left is requeued). A message's "sent"
    shares the statement that writes the next message's data_sent_at (`_Later`). The drain stops when
    none is left, at the budget (DELIVERY_DRAIN_MAX_MESSAGES / _SECONDS), or when the inbox must
    wait (inactive, hourly cap) or the server failed transiently: what it claimed and did not
    send goes back to queued, untouched, for another task and the sweeper. At the budget, it
    enqueues a task for the rest. Returns the outcome of each message it touched.
    """
    started = time.monotonic()
    found = _load(message_id)
    if not found:
        return {message_id: Outcome("not claimed")}
    inbox = found[0].inbox  # once per task, not per message
    later = _Later()
    try:
        return _drain(found[0], inbox, started, later)
    finally:
        try:
            later.write()
        except Exception:  # the database is down: the sweeper finds the message in sending, data sent
            logger.warning("Could not record that message %s was sent", later.message_id, exc_info=True)


def _drain(first: Message, inbox: Inbox, started: float, later: _Later) -> dict[int, Outcome]:
    outcomes = {first.pk: _deliver(first, inbox, timezone.now(), reuse_connection=True, later=later)}
    if not _may_go_on(outcomes[first.pk]):
        return outcomes
    max_messages = int(settings.DELIVERY_DRAIN_MAX_MESSAGES)
    max_seconds = float(settings.DELIVERY_DRAIN_MAX_SECONDS)
    claimed: list[tuple[Message, dt.datetime]] = []
    lost = lost_total = 0
    from_end = False
    at_budget = False
    try:
        while True:
            if len(outcomes) >= max_messages or time.monotonic() - started >= max_seconds:
                at_budget = True
                break
            if not claimed:
                now = timezone.now()
                candidates = _next_queued(inbox, now, newest_first=from_end,
                                          limit=min(DRAIN_CLAIM_BATCH, max_messages - len(outcomes)))
                if not candidates:
                    break
                waiting, allowance = _must_wait(inbox, candidates[0], now)
                if waiting is not None:
                    outcomes[candidates[0].pk] = waiting
                    break
                claimed = [(message, now) for message in _claim(candidates[:allowance], inbox, now)]
                if not claimed:
                    # Another worker won these rows: read again, a bounded number of times in a row.
                    # Two drainers working the same rows in the same order would collide on every
                    # read: the loser turns to take its rows from the other end of the queue.
                    from_end = not from_end
                    lost += 1
                    lost_total += 1
                    if lost > DRAIN_CLAIM_RETRIES:
                        break
                    continue
                lost = 0
            message, claimed_at = claimed.pop(0)
            following = claimed[0][0] if claimed else None
            outcome = _deliver_claimed(message, claimed_at, reuse_connection=True, later=later,
                                       following=following)
            outcomes[message.pk] = outcome
            if not _may_go_on(outcome):
                break
    finally:
        smtp.drop_following(inbox)  # the next message's commands went out, and it will not
        try:
            _release([message for message, _ in claimed])
        except Exception:  # the database is down: the sweeper requeues them later; keep the first error
            logger.warning("Could not give back %d claimed messages of inbox %s", len(claimed), inbox.pk,
                           exc_info=True)
    if at_budget:
        _hand_over(inbox)
    if len(outcomes) > 1 or lost_total:
        delivered = sum(1 for outcome in outcomes.values() if outcome.status != "not claimed")
        logger.info("Drained %d messages of inbox %s in %.1f s; %d claims lost to other workers",
                    delivered, inbox.pk, time.monotonic() - started, lost_total)
    return outcomes


def _hand_over(inbox: Inbox) -> None:
    """A drain at its budget leaves the rest of the queue to a new task, behind the other tasks waiting."""
    from conversations.replies import enqueue_delivery

    following = _next_queued(inbox, timezone.now(), newest_first=False, limit=1)
    if following:
        enqueue_delivery(following[0].pk)


def _must_wait(inbox: Inbox, message: Message, now: dt.datetime) -> tuple[Outcome | None, int | None]:
    """(deferred, when the inbox may not send now; how many more it may send this hour, None for no cap).

    Waiting is not a status change: the message stays queued (never dropped) with a later time.
    """
    message.inbox = inbox
    if not inbox.active:
        return _defer(message, now + dt.timedelta(minutes=5), INACTIVE), 0
    allowance, wait_until = _hourly_allowance(inbox, now)
    if allowance == 0:
        return _defer(message, wait_until, OVER_CAP), 0
    return None, allowance


def _claim(candidates: list[Message], inbox: Inbox, now: dt.datetime) -> list[Message]:
    """Claim those of `candidates` still queued and due, in one UPDATE; the ones this worker got.

    The rows come back with their attempt count and history as claimed, so a row another
    worker tried meanwhile is sent with its true history.
    """
    if not candidates:
        return []
    by_id = {message.pk: message for message in candidates}
    connection = connections[router.db_for_write(Message)]
    history_field = Message._meta.get_field("delivery_history")
    placeholders = ", ".join(["%s"] * len(by_id))
    # Identifiers are ours; every value is a parameter.
    sql = (
        f'UPDATE {by_primary_key(_TABLE, connection)} SET "delivery_status" = %s, "sending_started_at" = %s, '  # noqa: S608
        '"data_sent_at" = NULL, "delivery_attempts" = "delivery_attempts" + 1 '
        f'WHERE "id" IN ({placeholders}) AND '
        + only_filter('"delivery_status" = %s AND ("next_attempt_at" IS NULL OR "next_attempt_at" <= %s)',
                      connection)
        + ' RETURNING "id", "delivery_attempts", "delivery_history"'
    )
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(sql, [DeliveryStatus.SENDING, at, *by_id, DeliveryStatus.QUEUED, at])
        rows = cursor.fetchall()
    claimed = []
    order = {pk: index for index, pk in enumerate(by_id)}
    for pk, attempts, history in sorted(rows, key=lambda row: order[row[0]]):
        message = by_id[pk]
        message.inbox = inbox
        message.delivery_status = DeliveryStatus.SENDING
        message.delivery_attempts = attempts
        message.delivery_history = history_field.from_db_value(history, None, connection)
        claimed.append(message)
    return claimed


def _release(messages: list[Message]) -> None:
    """Give back claimed messages whose data never left, as they were: queued, the attempt uncounted."""
    if not messages:
        return
    connection = connections[router.db_for_write(Message)]
    placeholders = ", ".join(["%s"] * len(messages))
    sql = (
        f'UPDATE {by_primary_key(_TABLE, connection)} SET "delivery_status" = %s, '  # noqa: S608
        '"sending_started_at" = NULL, "delivery_attempts" = "delivery_attempts" - 1 '
        f'WHERE "id" IN ({placeholders}) AND '
        + only_filter('"delivery_status" = %s AND "data_sent_at" IS NULL', connection)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [DeliveryStatus.QUEUED, *(m.pk for m in messages), DeliveryStatus.SENDING])


def _may_go_on(outcome: Outcome) -> bool:
    """A drain stops when the inbox must wait or the server is unwell; a refusal of one message is its own."""
    # Uncertain: the server stopped answering after the data; the connection is gone, the rest wait.
    return outcome.status not in ("deferred", DeliveryStatus.QUEUED, DeliveryStatus.UNCERTAIN)


def _defer(message: Message, until: dt.datetime, reason: str) -> Outcome:
    Message.objects.filter(pk=message.pk, delivery_status=DeliveryStatus.QUEUED).update(next_attempt_at=until)
    return Outcome("deferred", reason, retry_at=until)


def _send(message: Message, history: list[dict[str, Any]], reuse_connection: bool,
          later: _Later | None = None,
          following: Message | None = None) -> Outcome:
    def before_data() -> None:
        # Committed before the first byte of data leaves: from here on a crash means "maybe sent".
        # The previous message's "sent", held back, shares the statement.
        _write(message, later, data_sent_at=timezone.now(), delivery_history=history)

    inbox = message.inbox
    if inbox.outgoing_method == OutgoingMethod.ANYMAIL:
        email_for_service = build_email(message)
        before_data()
        result = smtp.send_anymail(inbox, email_for_service)
    else:
        email = _build(message)
        result = smtp.send(inbox, email.mime, envelope_from=ascii_address(inbox.address), recipients=email.recipients,
                           before_data=before_data, reuse=reuse_connection, data=email.data,
                           meanwhile=later.write if later is not None else None,
                           following=_envelope(following) if following is not None else None)
    detail = result.reply
    if result.refused:
        detail += "; refused: " + "; ".join(f"{a}: {r}" for a, r in result.refused.items())
    # Held back for the next message's commit when a drain goes on (`_Later`); a copy to the
    # Sent folder reads the row's history, so that message's status is written at once.
    return _finish(message, history, DeliveryStatus.SENT, detail, later, hold=not inbox.save_to_sent,
                   delivery_server_reply=detail, delivery_last_error="", delivered_at=timezone.now())


def _envelope(message: Message) -> tuple[str, list[str]] | None:
    """The envelope `message` will be sent with, or None if it cannot be sent: it fails on its own turn."""
    try:
        return ascii_address(message.inbox.address), envelope_recipients(message)
    except Exception:
        return None


def _finish(message: Message, history: list[dict[str, Any]], status: str, detail: str,
            later: _Later | None = None, *, hold: bool = False, **fields: Any) -> Outcome:
    """Record the outcome of an attempt and publish it; with `hold`, `later` records it (see _Later)."""
    now = timezone.now()
    history.append(_entry(now, DeliveryStatus.SENDING, status, detail))
    message.delivery_status = status
    outcome = Outcome(status, detail, retry_at=fields.get("next_attempt_at"))
    if hold and later is not None:
        later.hold(message, history, detail, fields)
        return outcome
    _write(message, later, delivery_status=status, delivery_history=history, **fields)
    _publish_status(message, status, detail)
    return outcome


class _Later:
    """A drain's last "sent" write, held back to share the next message's write.

    Each message of a drain needs two committed writes: data_sent_at before its data leaves,
    and its outcome after the server's reply. Message i's "sent" goes out in one statement (rows.update_rows)
    with message i+1's data_sent_at, two round trips later, or when the drain ends: one
    commit a message instead of two. Only "sent" waits, and not for long: when the server is
    slow to answer the next message's commands, or a new connection must be opened, it is
    written meanwhile (`smtp.send(meanwhile=...)`). If the worker dies before it is written,
    the message is in sending with data_sent_at set, and the sweeper makes it uncertain:
    never a second copy.
    """

    def __init__(self) -> None:
        self._held: tuple[Message, list[dict[str, Any]], str, dict[str, Any]] | None = None

    @property
    def message_id(self) -> int | None:
        return self._held[0].pk if self._held else None

    def hold(self, message: Message, history: list[dict[str, Any]], detail: str, fields: dict[str, Any]) -> None:
        self.write()  # never more than one held back
        self._held = (message, history, detail, fields)

    def take(self) -> tuple[Message, list[dict[str, Any]], str, dict[str, Any]] | None:
        held, self._held = self._held, None
        return held

    def put_back(self, held: tuple[Message, list[dict[str, Any]], str, dict[str, Any]]) -> None:
        self._held = held

    def write(self) -> None:
        _write(None, self)


def _write(message: Message | None, later: _Later | None, **values: Any) -> None:
    """Write `values` on a message in sending, and `later`'s held "sent" in the same statement; publish the latter."""
    held = later.take() if later is not None else None
    changes = {message.pk: values} if message is not None else {}
    if held is not None:
        sent, history, _, fields = held
        changes[sent.pk] = {"delivery_status": DeliveryStatus.SENT, "delivery_history": history, **fields}
    if not changes:
        return
    try:
        update_rows(Message, changes, where='"delivery_status" = %s', where_params=(DeliveryStatus.SENDING,))
    except BaseException:
        if held is not None:
            later.put_back(held)  # not written: still held, for the next write or the drain's end
        raise
    if held is not None:
        _publish_status(held[0], DeliveryStatus.SENT, held[2])


def _retry_or_give_up(message: Message, history: list[dict[str, Any]], exc: smtp.TransientError,
                      later: _Later | None = None) -> Outcome:
    now = timezone.now()
    retry_at = now + dt.timedelta(seconds=backoff_seconds(message.delivery_attempts))
    started = message.queued_at or message.created_at
    if retry_at - started > dt.timedelta(seconds=settings.DELIVERY_GIVE_UP_SECONDS):
        detail = f"Gave up after {message.delivery_attempts} attempts: {exc}"
        return _finish(message, history, DeliveryStatus.FAILED, detail, later, delivery_last_error=detail,
                       delivery_server_reply=exc.reply)
    detail = f"{exc} (retry at {retry_at:%H:%M:%S} UTC)"
    return _finish(message, history, DeliveryStatus.QUEUED, detail, later, delivery_last_error=str(exc),
                   delivery_server_reply=exc.reply, next_attempt_at=retry_at)


def _hourly_allowance(inbox: Inbox, now: dt.datetime) -> tuple[int | None, dt.datetime | None]:
    """(how many more the inbox may send this hour, None for no cap; when the next becomes allowed, if none)."""
    cap = inbox.max_sends_per_hour
    if not cap:
        return None, None
    # Two workers may both pass this check at the edge: the cap can be exceeded by a message
    # or two, never by a flood. It is a guardrail, not an accounting rule.
    window = now - dt.timedelta(hours=1)
    sent = list(Message.objects.filter(inbox_id=inbox.pk, direction=Direction.OUT, data_sent_at__gte=window)
                .order_by("data_sent_at").values_list("data_sent_at", flat=True)[:cap])
    if len(sent) < cap:
        return cap - len(sent), None
    return 0, sent[0] + dt.timedelta(hours=1, seconds=1)


def _save_to_sent(message: Message) -> None:
    """Store a copy in the mailbox's Sent folder; a failure here is noted, it does not fail the delivery."""
    inbox = message.inbox
    try:
        from inboxes import imap

        raw = mime_message(build_email(message)).as_bytes(linesep="\r\n")
        imap.append(inbox, inbox.sent_folder, raw, ("\\Seen",))
        detail = f"saved to {inbox.sent_folder}"
    except Exception as exc:
        logger.warning("Could not save message %s to %s: %s", message.pk, inbox.sent_folder, exc)
        detail = f"could not save to {inbox.sent_folder}: {type(exc).__name__}: {exc}"
    entry = _entry(timezone.now(), DeliveryStatus.SENT, DeliveryStatus.SENT, detail)
    current = Message.objects.filter(pk=message.pk).values_list("delivery_history", flat=True).first() or []
    Message.objects.filter(pk=message.pk).update(delivery_history=[*current, entry])


# ---------------------------------------------------------------------------
# Deliberate resend and the sweeper
# ---------------------------------------------------------------------------
def resend_message(message_id: int, *, by: str = "") -> bool:
    """Queue an uncertain or failed message again, with the same Message-ID (clients collapse duplicates)."""
    now = timezone.now()
    message = Message.objects.select_related("conversation").filter(
        pk=message_id, delivery_status__in=[DeliveryStatus.UNCERTAIN, DeliveryStatus.FAILED]).first()
    if message is None:
        return False
    old = message.delivery_status
    history = [*message.delivery_history, _entry(now, old, DeliveryStatus.QUEUED,
                                                 f"resend requested{' by ' + by if by else ''}")]
    with transaction.atomic():
        moved = Message.objects.filter(pk=message.pk, delivery_status=old).update(
            delivery_status=DeliveryStatus.QUEUED, delivery_history=history, queued_at=now, next_attempt_at=None,
            data_sent_at=None, sending_started_at=None)
        if not moved:
            return False
        _publish_status(message, DeliveryStatus.QUEUED, "resend requested")
        from conversations.replies import deliver_on_commit

        deliver_on_commit(message)
    return True


@dataclass
class SweepResult:
    due: list[int]
    requeued: list[int]
    uncertain: list[int]


def sweep_deliveries(*, now: dt.datetime | None = None, stuck_after: dt.timedelta | None = None,
                     limit: int = 500) -> SweepResult:
    """Recover messages a crashed worker left in sending, and list queued ones whose time has come.

    A message stuck in sending is requeued only when its data never went out; otherwise the
    server may have it, and it becomes uncertain.
    """
    now = now or timezone.now()
    # Past the hard task time limit, no live worker can still be sending it.
    if stuck_after is None:
        stuck_after = dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    requeued: list[int] = []
    uncertain: list[int] = []
    stuck = Message.objects.select_related("conversation").filter(
        delivery_status=DeliveryStatus.SENDING, sending_started_at__lt=now - stuck_after)[:limit]
    for message in stuck:
        data_sent = message.data_sent_at is not None
        new = DeliveryStatus.UNCERTAIN if data_sent else DeliveryStatus.QUEUED
        detail = ("the worker stopped after handing the data over; the server may have it" if data_sent
                  else "the worker stopped before handing the data over; requeued")
        history = list(message.delivery_history)
        if not history or history[-1].get("to") != DeliveryStatus.SENDING:
            history.append(_entry(message.sending_started_at, DeliveryStatus.QUEUED, DeliveryStatus.SENDING,
                                  f"attempt {message.delivery_attempts}"))
        history.append(_entry(now, DeliveryStatus.SENDING, new, detail))
        moved = Message.objects.filter(
            pk=message.pk, delivery_status=DeliveryStatus.SENDING, sending_started_at=message.sending_started_at,
        ).update(delivery_status=new, delivery_history=history, delivery_last_error=detail,
                 next_attempt_at=None if data_sent else now)
        if moved:
            _publish_status(message, new, detail)
            (uncertain if data_sent else requeued).append(message.pk)
    due = list(
        Message.objects.filter(delivery_status=DeliveryStatus.QUEUED, direction=Direction.OUT)
        .filter(Q(next_attempt_at__lte=now)
                | Q(next_attempt_at__isnull=True, queued_at__lt=now - dt.timedelta(seconds=LOST_TASK_SECONDS)))
        .order_by("next_attempt_at", "id").values_list("pk", flat=True)[:limit]
    )
    return SweepResult(due=due, requeued=requeued, uncertain=uncertain)
