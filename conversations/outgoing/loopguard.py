"""The loop guard: whether an automatic message (an acknowledgement, an AI reply) may answer mail.

One rule for everything we send without a person: `may_send_automatic` loads what the rules
need under the inbox's row lock, `decide` applies them to plain values, and every refusal is
stored with its reason (AutomaticReplyRefusal). The rules, in order:

- the incoming message is automatic (RFC 3834, DSNs, lists, vendor autoresponders: flagged by ingest),
  or its sender asked for no auto-replies (X-Auto-Response-Suppress, for acknowledgements);
- it comes from, or would go to, one of our own addresses, or to an address that reads no replies;
- it carries one of our own Message-IDs, or answers our mail where only an opening is answered;
- its subject keeps growing by reply or "Automated Response:" prefixes across the inbox's
  recent mail, or its body repeats the inbox's recent mail — the marks of a robot that ignores
  every header and writes from a new address into a new conversation each time;
- caps that hold when every header lies: one automatic message per conversation and per
  recipient a day, AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR per inbox.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Substr
from django.utils import timezone

from conversations.models import AutomaticReplyRefusal, Conversation, Direction, Message, MessageKind
from conversations.tokens import conversation_from_message_id
from inboxes.mailformat.automatic import suppressed_auto_replies
from inboxes.mailformat.headers import header_safe, message_ids, strip_reply_prefixes
from inboxes.mailformat.rawmail import MAX_HEADER_BYTES, head_end
from inboxes.models import Inbox

logger = logging.getLogger(__name__)

ACKNOWLEDGEMENT = "acknowledgement"
AI_REPLY = "ai_reply"

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
# How much of the inbox's recent incoming mail the subject and body rules compare with: enough
# to span a loop's rounds between other customers' mail, bounded for a busy inbox.
RECENT_MESSAGES = 50
TEXT_COMPARED = 4000
# A subject grown by prefixes over two earlier ones ("x", "Re: x", "Auto: Re: x"), and a body the
# inbox got twice before: one repetition happens between people, two are a robot's rounds.
GROWTHS_REFUSED = 2
REPEATS_REFUSED = 2

# Local parts of addresses that read no replies: an automatic message to them is at best lost,
# at worst answered by the robot behind them.
_NO_READER = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|mailer[-_]?daemon|postmaster|bounces?)(?:[-+_.].*)?$",
    re.IGNORECASE)
# Prefixes autoresponders put before the subject they answer, besides reply prefixes.
_AUTOMATIC_PREFIX = re.compile(
    r"^\s*(?:automated response|automatic reply|auto[- ]?reply|auto[- ]?response|auto|out of (?:the )?office"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|risposta automatica"
    r"|respuesta autom[áa]tica|autosvar|automatisch antwoord)\s*:\s*",
    re.IGNORECASE)
_QUOTED_LINE = re.compile(r"^\s*>.*$", re.MULTILINE)


@dataclass(frozen=True)
class Incoming:
    """The message an automatic one would answer, as plain values."""

    sender: str  # the From address
    recipient: str  # where the automatic message would go (the conversation's contact)
    automatic_reason: str  # ingest's flag, empty for mail a person wrote
    message_id: str
    referenced_ids: tuple[str, ...]  # In-Reply-To and References
    subject: str
    text: str
    suppressed_auto_replies: str = ""  # X-Auto-Response-Suppress when it names auto-replies


@dataclass(frozen=True)
class Recent:
    """What the inbox is, and what it sent and received lately, as plain values."""

    own_addresses: frozenset[str]
    message_id_domain: str  # the domain of our Message-IDs
    message_id_domain_is_ours_alone: bool  # MESSAGE_ID_DOMAIN is set: every id at it is ours
    answered_kinds: frozenset[str] = frozenset()  # automatic_reason of our messages it answers
    to_conversation_today: int = 0
    to_recipient_today: int = 0
    from_inbox_last_hour: int = 0
    inbox_hourly_cap: int = 50
    earlier_subjects: tuple[str, ...] = ()  # the inbox's recent incoming mail, newest first
    earlier_texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str = ""
    reason: str = ""


ALLOWED = Decision(True)


def _refuse(rule: str, reason: str) -> Decision:
    return Decision(False, rule, reason[:255])


# ---------------------------------------------------------------------------
# The decision: pure
# ---------------------------------------------------------------------------
def decide(incoming: Incoming, recent: Recent, kind: str) -> Decision:
    """Whether an automatic message of `kind` may answer `incoming`; the first rule that refuses says why."""
    for rule in _RULES:
        decision = rule(incoming, recent, kind)
        if decision is not None:
            return decision
    return ALLOWED


def _automatic(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    if incoming.automatic_reason:
        return _refuse("automatic", f"automatic mail ({incoming.automatic_reason})")
    return None


def _asked_for_none(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    # The sender asked for no auto-replies; an AI reply answers the question itself, so it may.
    if kind == ACKNOWLEDGEMENT and incoming.suppressed_auto_replies:
        return _refuse("asked_for_none", "the sender asked for no automatic replies "
                                         f"(X-Auto-Response-Suppress: {incoming.suppressed_auto_replies})")
    return None


def _addresses(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    sender, recipient = incoming.sender.lower(), incoming.recipient.lower()
    if not recipient or "@" not in recipient or recipient.endswith(".invalid"):
        return _refuse("no_recipient", "no usable address to write to")
    for address in (sender, recipient):
        if address in recent.own_addresses:
            return _refuse("own_address", f"{address} is one of our own inboxes")
    # Only the recipient: a web form writes From: noreply@ with the customer in Reply-To.
    if _NO_READER.match(recipient.rpartition("@")[0]):
        return _refuse("no_reader", f"{recipient} does not read replies")
    return None


def _message_ids(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    if incoming.message_id and is_our_message_id(incoming.message_id, recent):
        return _refuse("own_message_id", f"it carries our own Message-ID <{incoming.message_id}>")
    if ACKNOWLEDGEMENT in recent.answered_kinds:
        return _refuse("answers_automatic", "it answers one of our acknowledgements")
    # An acknowledgement greets a new conversation; mail that answers ours is none, whatever
    # threading made of it. An AI reply goes on answering the customer who answers it.
    if kind == ACKNOWLEDGEMENT:
        for found in incoming.referenced_ids:
            if is_our_message_id(found, recent):
                return _refuse("answers_ours", f"it answers our message <{found}>")
    return None


def _growing_subject(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    subject = _normal(incoming.subject)
    grown_from = {len(e) for e in map(_normal, recent.earlier_subjects) if _grown_by_prefixes(subject, e)}
    if len(grown_from) >= GROWTHS_REFUSED:
        return _refuse("growing_subject",
                       f"its subject keeps growing by reply prefixes ({len(grown_from)} shorter forms lately)")
    return None


def _repeated_body(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    body = normal_text(incoming.text)
    if not body:
        return None
    repeats = sum(1 for earlier in recent.earlier_texts if normal_text(earlier) == body)
    if repeats >= REPEATS_REFUSED:
        return _refuse("repeated_body", f"the inbox got the same text {repeats} times lately")
    return None


def _caps(incoming: Incoming, recent: Recent, kind: str) -> Decision | None:
    if recent.to_conversation_today:
        return _refuse("conversation_cap", "an automatic message went to this conversation in the last 24 hours")
    if recent.to_recipient_today:
        return _refuse("recipient_cap", f"an automatic message went to {incoming.recipient} in the last 24 hours")
    if recent.from_inbox_last_hour >= recent.inbox_hourly_cap:
        return _refuse("inbox_cap", f"the inbox sent {recent.from_inbox_last_hour} automatic messages in the "
                                    f"last hour (at most {recent.inbox_hourly_cap})")
    return None


_RULES: tuple[Callable[[Incoming, Recent, str], Decision | None], ...] = (
    _automatic, _asked_for_none, _addresses, _message_ids, _growing_subject, _repeated_body, _caps,
)


def is_our_message_id(message_id: str, recent: Recent) -> bool:
    """Whether a Message-ID is one we generated.

    The inbox's domain alone is not enough: the company's own mail server gives its staff's
    mail ids at that domain too, and they may write to their helpdesk. Our ids say so (signed).
    """
    left, _, domain = message_id.strip().strip("<>").rpartition("@")
    if domain.lower() == recent.message_id_domain and (recent.message_id_domain_is_ours_alone
                                                        or left.startswith("sb.")):
        return True
    return conversation_from_message_id(message_id) is not None


def strip_prefixes(subject: str) -> str:
    """The subject without reply and autoresponder prefixes ("Automated Response: Re: x" → "x")."""
    while True:
        stripped = _AUTOMATIC_PREFIX.sub("", strip_reply_prefixes(subject))
        if stripped == subject:
            return stripped
        subject = stripped


def _grown_by_prefixes(subject: str, earlier: str) -> bool:
    if not earlier or len(subject) <= len(earlier) or not subject.endswith(earlier):
        return False
    return strip_prefixes(subject[:-len(earlier)]) == ""


def _normal(subject: str) -> str:
    return " ".join(header_safe(subject).split()).casefold()


def normal_text(text: str) -> str:
    """The body as compared: quoted lines dropped, case and spacing ignored, its first part only."""
    return " ".join(_QUOTED_LINE.sub("", text[:TEXT_COMPARED]).split()).casefold()


# ---------------------------------------------------------------------------
# Loading and recording
# ---------------------------------------------------------------------------
def may_send_automatic(conversation: Conversation, incoming: Message, kind: str) -> Decision:
    """Whether an automatic message of `kind` may answer `incoming` in `conversation`; a refusal is recorded.

    Call it inside the transaction that then queues the message: it locks the inbox's row, so
    the automatic messages of one inbox are decided one after another and no two pass a cap together.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("may_send_automatic must run in the transaction that queues the automatic message")
    inbox = Inbox.objects.select_for_update().get(pk=conversation.inbox_id)
    values = _incoming_values(conversation, incoming)
    decision = decide(values, _recent(inbox, conversation, incoming, values), kind)
    if not decision.allowed:
        AutomaticReplyRefusal.objects.get_or_create(
            message=incoming, kind=kind,
            defaults={"inbox": inbox, "conversation": conversation, "rule": decision.rule,
                      "reason": decision.reason})
        logger.info("No %s for message %s of %s: %s", kind, incoming.pk, inbox.address, decision.reason)
    return decision


def _incoming_values(conversation: Conversation, incoming: Message) -> Incoming:
    return Incoming(
        sender=incoming.from_address, recipient=conversation.contact.address,
        automatic_reason=incoming.automatic_reason if incoming.is_automatic else "",
        message_id=incoming.header_message_id,
        referenced_ids=tuple(dict.fromkeys(message_ids(incoming.in_reply_to) + message_ids(incoming.references))),
        subject=incoming.subject, text=incoming.text, suppressed_auto_replies=_suppressed_auto_replies(incoming),
    )


def _suppressed_auto_replies(incoming: Message) -> str:
    """What the stored raw message's X-Auto-Response-Suppress asks of auto-replies (not kept on the row)."""
    if not incoming.raw:
        return ""
    try:
        with incoming.raw.open("rb") as handle:
            head = handle.read(MAX_HEADER_BYTES)
    except OSError:
        logger.warning("The raw copy of message %s could not be read", incoming.pk, exc_info=True)
        return ""
    headers = BytesHeaderParser().parsebytes(head[:head_end(head)[0]])
    return suppressed_auto_replies(lambda name: None if headers[name] is None else str(headers[name]))


def _recent(inbox: Inbox, conversation: Conversation, incoming: Message, values: Incoming) -> Recent:
    now = timezone.now()
    sent = Message.objects.filter(inbox=inbox, direction=Direction.OUT, is_automatic=True, kind=MessageKind.EMAIL)
    configured = (settings.SWITCHBOARD_MESSAGE_ID_DOMAIN or "").lower()
    answered = sent.filter(header_message_id__in=values.referenced_ids) if values.referenced_ids else sent.none()
    earlier = _earlier_incoming(inbox, incoming, since=now - DAY)
    return Recent(
        own_addresses=own_addresses(),
        message_id_domain=configured or inbox.domain,
        message_id_domain_is_ours_alone=bool(configured),
        answered_kinds=frozenset(answered.values_list("automatic_reason", flat=True)),
        to_conversation_today=sent.filter(conversation=conversation, created_at__gte=now - DAY).count(),
        to_recipient_today=sent.filter(conversation__contact_id=conversation.contact_id,
                                       created_at__gte=now - DAY).count(),
        from_inbox_last_hour=sent.filter(created_at__gte=now - HOUR).count(),
        inbox_hourly_cap=settings.AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR,
        earlier_subjects=tuple(subject for subject, _ in earlier),
        earlier_texts=tuple(text for _, text in earlier),
    )


def _earlier_incoming(inbox: Inbox, incoming: Message, *, since: dt.datetime) -> list[tuple[str, str]]:
    """(subject, start of the text) of the inbox's incoming mail before `incoming`, newest first, bounded."""
    rows = (Message.objects.filter(inbox=inbox, direction=Direction.IN, kind=MessageKind.EMAIL, id__lt=incoming.pk)
            .order_by("-id").annotate(head=Substr("text", 1, TEXT_COMPARED))
            .values_list("subject", "head", "created_at")[:RECENT_MESSAGES])
    return [(subject, head or "") for subject, head, created_at in rows if created_at >= since]


def own_addresses() -> frozenset[str]:
    """Every address of ours: the inboxes' own and the Reply-To addresses they put on their mail."""
    rows = Inbox.objects.filter(~Q(address="")).values_list("address", "reply_to")
    return frozenset(address.lower() for row in rows for address in row if address)
