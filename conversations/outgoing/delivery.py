"""Deliver outgoing messages exactly once, or say they might not have left.

queued → sending → sent | failed | uncertain, each step a conditional UPDATE. `data_sent_at` is
written just before the message data goes to the server: a worker that dies after that
point leaves a message the server may have, which becomes uncertain rather than being sent
again. Every status change is appended to `delivery_history` and published as
`message.status`.

Read top to bottom: one message is loaded, checked (due, the inbox may send: active, under
its hourly cap, its login not refused), claimed, sent (exactly the bytes composed when it was
queued), and finished (sent, failed, uncertain, or queued again with a backoff until the
give-up time; a refused login keeps it queued and puts the inbox's outgoing side in error);
then a deliberate resend and the sweeper. A task delivers its message and drains the inbox's
queue over one connection (`deliver_and_drain`); the machinery of that drain (claiming many,
write coalescing) is conversations.outgoing.drain, which calls the steps here. The copy in
the Sent folder is conversations.outgoing.sent_copy.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from conversations.enqueue import deliver_on_commit
from conversations.live.events import MESSAGE_STATUS, publish
from conversations.models import Attachment, Conversation, DeliveryStatus, Direction, Message, MessageKind
from conversations.outgoing import drain, sent_copy
from conversations.outgoing.compose import StoredEmail, ascii_address, envelope_recipients, stored_bytes
from core.rows import update_row
from inboxes import smtp
from inboxes.models import Inbox, OutgoingMethod, OutgoingStatus

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
# A queued message without next_attempt_at had its task enqueued on commit; the sweeper
# dispatches it again only when that task looks lost.
LOST_TASK_SECONDS = 120
INACTIVE = "the inbox is inactive"
OVER_CAP = "hourly sending limit reached"
LOGIN_REFUSED = "waiting for the SMTP login to work"


@dataclass
class Outcome:
    status: str  # a DeliveryStatus, or "not claimed" / "deferred"
    detail: str = ""
    retry_at: dt.datetime | None = None


def _entry(now: dt.datetime, old: str, new: str, detail: str) -> dict[str, Any]:
    return {"at": now.isoformat(), "from": old, "to": new, "detail": detail[:2000]}


def _publish_status(message: Message, status: str, detail: str = "") -> None:
    publish(MESSAGE_STATUS, message.conversation.department_id, {
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
def _load(message_id: int) -> list[Message]:
    """The outgoing email `message_id` with its inbox, lean: whole rows with every related column cost ~2.4 ms.

    The conversation's few fields ride along as annotations (public id and department for the
    events, created_at for Thread-Index), and whether the message has attachments, so the build
    skips that query when it has none.
    """
    queryset = (
        Message.objects.filter(pk=message_id, direction=Direction.OUT, kind=MessageKind.EMAIL)
        .only(*drain.FIELDS, "inbox").select_related("inbox")
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
             later: drain.Later | None = None) -> Outcome:
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
                     later: drain.Later | None = None,
                     following: Message | None = None) -> Outcome:
    """Send a message this worker claimed (its row in sending, its attempt counted) and record the outcome.

    `later`: a drain's held-back "sent" write (`drain.Later`), which this message's writes carry.
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
    except smtp.AuthenticationError as exc:
        outcome = _login_refused(message, history, exc, later)
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
        sent_copy.save_sent_copy(message)  # a failure is retried on its own, never by sending again
    return outcome


def _must_wait(inbox: Inbox, message: Message, now: dt.datetime) -> tuple[Outcome | None, int | None]:
    """(deferred, when the inbox may not send now; how many more it may send this hour, None for no cap).

    Waiting is not a status change: the message stays queued (never dropped) with a later time.
    """
    message.inbox = inbox
    if not inbox.active:
        return _defer(message, now + dt.timedelta(minutes=5), INACTIVE), 0
    if inbox.outgoing_status == OutgoingStatus.ERROR:
        waiting = _wait_for_login(inbox, message, now)
        if waiting is not None:
            return waiting, 0
    allowance, wait_until = _hourly_allowance(inbox, now)
    if allowance == 0:
        return _defer(message, wait_until, OVER_CAP), 0
    return None, allowance


def _wait_for_login(inbox: Inbox, message: Message, now: dt.datetime) -> Outcome | None:
    """While the server refuses the inbox's login, its replies wait, in order, behind one that tries again.

    At the inbox's retry time the oldest queued reply tries; the rest stay due but wait, so that
    once it goes through, the drain it is part of sends them after it, oldest first.
    """
    if inbox.outgoing_retry_at and inbox.outgoing_retry_at > now:
        return _defer(message, inbox.outgoing_retry_at, LOGIN_REFUSED)
    oldest = (Message.objects.filter(inbox_id=inbox.pk, direction=Direction.OUT, kind=MessageKind.EMAIL,
                                     delivery_status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
              .order_by("pk").values_list("pk", flat=True).first())
    if oldest not in (None, message.pk):
        return Outcome("deferred", LOGIN_REFUSED)
    return None


def _may_go_on(outcome: Outcome) -> bool:
    """A drain stops when the inbox must wait or the server is unwell; a refusal of one message is its own."""
    # Uncertain: the server stopped answering after the data; the connection is gone, the rest wait.
    return outcome.status not in ("deferred", DeliveryStatus.QUEUED, DeliveryStatus.UNCERTAIN)


def _defer(message: Message, until: dt.datetime, reason: str) -> Outcome:
    Message.objects.filter(pk=message.pk, delivery_status=DeliveryStatus.QUEUED).update(next_attempt_at=until)
    return Outcome("deferred", reason, retry_at=until)


def _send(message: Message, history: list[dict[str, Any]], reuse_connection: bool,
          later: drain.Later | None = None,
          following: Message | None = None) -> Outcome:
    def before_data() -> None:
        # Committed before the first byte of data leaves: from here on a crash means "maybe sent".
        # The previous message's "sent", held back, shares the statement.
        drain.write(message, later, data_sent_at=timezone.now(), delivery_history=history)

    # Exactly the bytes composed when the message was queued, whichever way it leaves.
    inbox, data = message.inbox, stored_bytes(message)
    if inbox.outgoing_method == OutgoingMethod.ANYMAIL:
        email_for_service = StoredEmail(data, bcc=[entry["address"] for entry in message.bcc])
        before_data()
        result = smtp.send_anymail(inbox, email_for_service)
    else:
        result = smtp.send(inbox, None, data=data, envelope_from=ascii_address(inbox.address),
                           recipients=envelope_recipients(message), before_data=before_data,
                           reuse=reuse_connection, meanwhile=later.write if later is not None else None,
                           following=_envelope(following) if following is not None else None)
    if inbox.outgoing_status != OutgoingStatus.OK:
        inbox.mark_outgoing_ok()
    detail = result.reply
    if result.refused:
        detail += "; refused: " + "; ".join(f"{a}: {r}" for a, r in result.refused.items())
    # Held back for the next message's commit when a drain goes on (`drain.Later`); a copy to the
    # Sent folder reads the row's history, so that message's status is written at once, its copy in line.
    copy = sent_copy.pending(timezone.now()) if inbox.save_to_sent else {}
    return _finish(message, history, DeliveryStatus.SENT, detail, later, hold=not inbox.save_to_sent,
                   delivery_server_reply=detail, delivery_last_error="", delivered_at=timezone.now(), **copy)


def _envelope(message: Message) -> tuple[str, list[str]] | None:
    """The envelope `message` will be sent with, or None if it cannot be sent: it fails on its own turn."""
    try:
        return ascii_address(message.inbox.address), envelope_recipients(message)
    except Exception:
        return None


def _finish(message: Message, history: list[dict[str, Any]], status: str, detail: str,
            later: drain.Later | None = None, *, hold: bool = False, **fields: Any) -> Outcome:
    """Record the outcome of an attempt and publish it; with `hold`, `later` records it (see drain.Later)."""
    now = timezone.now()
    history.append(_entry(now, DeliveryStatus.SENDING, status, detail))
    message.delivery_status = status
    outcome = Outcome(status, detail, retry_at=fields.get("next_attempt_at"))
    if hold and later is not None:
        later.hold(message, history, detail, fields)
        return outcome
    drain.write(message, later, delivery_status=status, delivery_history=history, **fields)
    _publish_status(message, status, detail)
    return outcome


def _login_refused(message: Message, history: list[dict[str, Any]], exc: smtp.AuthenticationError,
                   later: drain.Later | None = None) -> Outcome:
    """Nothing was sent: the inbox's outgoing side shows the error, and its replies wait for the login to work."""
    retry_at = timezone.now() + dt.timedelta(seconds=backoff_seconds(message.delivery_attempts))
    message.inbox.mark_outgoing_error(str(exc), retry_at)
    return _retry_or_give_up(message, history, exc, later, retry_at=retry_at)


def _retry_or_give_up(message: Message, history: list[dict[str, Any]], exc: smtp.DeliveryError,
                      later: drain.Later | None = None, *, retry_at: dt.datetime | None = None) -> Outcome:
    """Queued again with a backoff, or failed once the message has waited DELIVERY_GIVE_UP_SECONDS."""
    retry_at = retry_at or timezone.now() + dt.timedelta(seconds=backoff_seconds(message.delivery_attempts))
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
    cap = inbox.sends_per_hour_cap  # the inbox's own, else the organisation policy's
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


# ---------------------------------------------------------------------------
# Draining: one task delivers the inbox's queued messages over one connection
# ---------------------------------------------------------------------------
def deliver_and_drain(message_id: int) -> dict[int, Outcome]:
    """Deliver this message, then the inbox's next queued, due ones, over one connection.

    Each message goes through the same steps as above, with its own data_sent_at and outcome
    writes and its own events, so a crash anywhere is recovered by the sweeper exactly as for
    a single delivery. The drain (conversations.outgoing.drain) claims a few rows at once and
    lets a message's "sent" share the next message's write. It stops when none is left, at
    the budget (DELIVERY_DRAIN_MAX_MESSAGES / _SECONDS; a task is enqueued for the rest), or
    when the inbox must wait (inactive, hourly cap) or the server failed transiently: what it
    claimed and did not send goes back to queued. Returns the outcome of each message it touched.
    """
    started = time.monotonic()
    found = _load(message_id)
    if not found:
        return {message_id: Outcome("not claimed")}
    first = found[0]
    inbox = first.inbox  # once per task, not per message
    later = drain.Later(published=lambda message, detail: _publish_status(message, DeliveryStatus.SENT, detail))
    steps = drain.Steps(
        deliver=lambda message: _deliver(message, inbox, timezone.now(), reuse_connection=True, later=later),
        must_wait=lambda message, now: _must_wait(inbox, message, now),
        deliver_claimed=lambda message, claimed_at, following: _deliver_claimed(
            message, claimed_at, reuse_connection=True, later=later, following=following),
        may_go_on=_may_go_on,
    )
    return drain.drain(first, inbox, started, later, steps)


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
        deliver_on_commit(message.pk, message.inbox_id)
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
    # Replies waiting for a refused login are due once their inbox's retry time has come: at once
    # when a manager saved new outgoing settings (Inbox.save).
    retrying = list(Inbox.objects.filter(outgoing_status=OutgoingStatus.ERROR, outgoing_retry_at__lte=now)
                    .values_list("pk", flat=True))
    if retrying:
        Message.objects.filter(delivery_status=DeliveryStatus.QUEUED, direction=Direction.OUT, inbox_id__in=retrying,
                               next_attempt_at__gt=now).update(next_attempt_at=now)
    due = list(
        Message.objects.filter(delivery_status=DeliveryStatus.QUEUED, direction=Direction.OUT)
        .filter(Q(next_attempt_at__lte=now)
                | Q(next_attempt_at__isnull=True, queued_at__lt=now - dt.timedelta(seconds=LOST_TASK_SECONDS)))
        .order_by("next_attempt_at", "id").values_list("pk", flat=True)[:limit]
    )
    return SweepResult(due=due, requeued=requeued, uncertain=uncertain)
