"""A delivery task's drain: many queued messages of one inbox over one connection, in few round trips.

The rules of one message (queued → sending → sent | failed | uncertain) live in
conversations.outgoing.delivery, which hands this module its steps as functions (`Steps`);
nothing here decides a message's status. What is here makes a queue of messages cheap:
reading the next queued rows with one cached statement, claiming several in one UPDATE,
giving back what a stopped drain did not send, and holding a message's "sent" back so it
shares the next message's write (`Later`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections, router
from django.utils import timezone

from conversations.enqueue import DRAIN_CLAIM_BATCH, enqueue_delivery
from conversations.models import Attachment, Conversation, DeliveryStatus, Direction, Message, MessageKind
from core.rows import by_primary_key, columns_and_converters, convert, only_filter, update_rows
from inboxes import smtp
from inboxes.models import Inbox

logger = logging.getLogger(__name__)

# A drain gives up after this many claims in a row lost to other workers.
DRAIN_CLAIM_RETRIES = 40
# What the email, the claim and the events need of a message, and no more.
FIELDS = ("id", "public_id", "conversation_id", "inbox_id", "direction", "kind", "message_id", "in_reply_to",
          "references", "from_address", "from_name", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
          "sent_at", "created_at", "priority", "is_automatic", "delivery_status", "delivery_attempts",
          "delivery_history", "queued_at", "next_attempt_at", "raw", "sent_copy_attempts")
_CONVERSATION_FIELDS = ("public_id", "department_id", "created_at")
# Model.from_db takes the values in the model's field order.
_FIELDS_IN_ORDER = tuple(field.attname for field in Message._meta.concrete_fields
                         if field.name in FIELDS or field.attname in FIELDS)
_TABLE = f'"{Message._meta.db_table}"'

Outcome = Any  # delivery.Outcome; this module never looks inside one


@dataclass(frozen=True)
class Steps:
    """What a drain asks of delivery, which keeps the rules."""

    deliver: Callable[[Message], Outcome]  # check, claim and send one loaded message
    must_wait: Callable[[Message, dt.datetime], tuple[Outcome | None, int | None]]  # (deferred, allowance)
    deliver_claimed: Callable[[Message, dt.datetime, Message | None], Outcome]  # (message, claimed at, next)
    may_go_on: Callable[[Outcome], bool]


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
def drain(first: Message, inbox: Inbox, started: float, later: Later, steps: Steps) -> dict[int, Outcome]:
    """Deliver `first`, then the inbox's next queued, due messages, claimed a few at a time.

    Stops when none is left, at the budget (DELIVERY_DRAIN_MAX_MESSAGES / _SECONDS, then a task
    is enqueued for the rest), or when `steps` says to; what it claimed and did not send goes
    back to queued, untouched. `later`'s held write is written before it returns.
    """
    try:
        return _drain(first, inbox, started, later, steps)
    finally:
        try:
            later.write()
        except Exception:  # the database is down: the sweeper finds the message in sending, data sent
            logger.warning("Could not record that message %s was sent", later.message_id, exc_info=True)


def _drain(first: Message, inbox: Inbox, started: float, later: Later, steps: Steps) -> dict[int, Outcome]:
    outcomes = {first.pk: steps.deliver(first)}
    if not steps.may_go_on(outcomes[first.pk]):
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
                candidates = next_queued(inbox, now, newest_first=from_end,
                                         limit=min(DRAIN_CLAIM_BATCH, max_messages - len(outcomes)))
                if not candidates:
                    break
                waiting, allowance = steps.must_wait(candidates[0], now)
                if waiting is not None:
                    outcomes[candidates[0].pk] = waiting
                    break
                claimed = [(message, now) for message in claim(candidates[:allowance], inbox, now)]
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
            outcome = steps.deliver_claimed(message, claimed_at, following)
            outcomes[message.pk] = outcome
            if not steps.may_go_on(outcome):
                break
    finally:
        smtp.drop_following(inbox)  # the next message's commands went out, and it will not
        try:
            release([message for message, _ in claimed])
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
    following = next_queued(inbox, timezone.now(), newest_first=False, limit=1)
    if following:
        enqueue_delivery(following[0].pk)


# ---------------------------------------------------------------------------
# Reading the next queued rows: one cached statement
# ---------------------------------------------------------------------------
@cache
def _next_queued_statement(alias: str, newest_first: bool) -> tuple[str, list, list, list, list]:
    """What `next_queued` runs: the statement, and the columns and converters of both tables."""
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


def next_queued(inbox: Inbox, now: dt.datetime, *, newest_first: bool, limit: int) -> list[Message]:
    """The inbox's next queued, due emails, loaded as delivery loads one (without the inbox); one cached statement.

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
# Claiming many, giving back
# ---------------------------------------------------------------------------
def claim(candidates: list[Message], inbox: Inbox, now: dt.datetime) -> list[Message]:
    """Claim those of `candidates` still queued and due, in one UPDATE; the ones this worker got.

    The same claim as delivery's for one message, for several. The rows come back with their
    attempt count and history as claimed, so a row another worker tried meanwhile is sent
    with its true history.
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


def release(messages: list[Message]) -> None:
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


# ---------------------------------------------------------------------------
# Write coalescing
# ---------------------------------------------------------------------------
_Held = tuple[Message, list[dict[str, Any]], str, dict[str, Any]]


class Later:
    """A drain's last "sent" write, held back to share the next message's write.

    Each message of a drain needs two committed writes: data_sent_at before its data leaves,
    and its outcome after the server's reply. Message i's "sent" goes out in one statement (rows.update_rows)
    with message i+1's data_sent_at, two round trips later, or when the drain ends: one
    commit a message instead of two. Only "sent" waits, and not for long: when the server is
    slow to answer the next message's commands, or a new connection must be opened, it is
    written meanwhile (`smtp.send(meanwhile=...)`). If the worker dies before it is written,
    the message is in sending with data_sent_at set, and the sweeper makes it uncertain:
    never a second copy. `published(message, detail)` announces a held "sent" once written.
    """

    def __init__(self, published: Callable[[Message, str], None]) -> None:
        self.published = published
        self._held: _Held | None = None

    @property
    def message_id(self) -> int | None:
        return self._held[0].pk if self._held else None

    def hold(self, message: Message, history: list[dict[str, Any]], detail: str, fields: dict[str, Any]) -> None:
        self.write()  # never more than one held back
        self._held = (message, history, detail, fields)

    def take(self) -> _Held | None:
        held, self._held = self._held, None
        return held

    def put_back(self, held: _Held) -> None:
        self._held = held

    def write(self) -> None:
        write(None, self)


def write(message: Message | None, later: Later | None, **values: Any) -> None:
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
        later.published(held[0], held[2])
