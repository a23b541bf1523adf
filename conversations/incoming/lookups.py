"""What ingest needs to know of stored rows for a batch of parsed messages, loaded with one
query per kind instead of one per message: the stored copies (dedup), the messages and
conversations replies and bounces point at (threading; our outgoing messages among them, for
bounces), the customers' contacts, and our own addresses.

The batch is stored message by message; `remember` adds each committed one, so a reply or a
duplicate later in the same batch sees it. Answers can be up to one batch old: what would go
wrong with a stale "not found" is stopped by the unique constraints (ingest retries with a fresh
`Lookups` of one message), and a conversation's status is read again under its row lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db.models import Q
from django.db.models.functions import Lower

from conversations.incoming.threading import KnownConversation, KnownMessage
from conversations.models import Contact, Conversation, ConversationStatus, Direction, Message
from conversations.tokens import conversation_from_message_id
from inboxes.mailformat.parsing import ParsedEmail
from inboxes.models import Inbox

# RFC 2606 reserves .invalid: these ids and addresses can never clash with real ones.
SYNTHETIC_ID_DOMAIN = "synthetic.switchboard.invalid"
UNKNOWN_SENDER = "unknown-sender@switchboard.invalid"

# Dedup reads only these: most messages are new, and a 50-column SELECT for nothing costs.
_DEDUP_FIELDS = ("pk", "message_id", "content_hash", "direction", "too_large", "raw_sha256", "imap_folder",
                 "imap_uidvalidity", "imap_uid", "duplicate_deliveries")
# What threading needs of a conversation: loading only this keeps the lookups cheap.
_CONVERSATION_FIELDS = ("public_id", "status", "closed_at", "last_message_at", "contact__address")


def synthetic_id(parsed: ParsedEmail) -> str:
    """The key of a message whose Message-ID a different message of the inbox already has: its
    content, so a copy that differs only in trace headers is the same message."""
    return f"{parsed.content_hash}@{SYNTHETIC_ID_DOMAIN}"


def raw_id(parsed: ParsedEmail) -> str:
    """The key of a message without a Message-ID: its exact bytes. Without an id or a Date, two
    alerts that differ only in their Received lines are two alerts, and only the same bytes
    (the same delivery fetched again) are the same message."""
    return f"{parsed.raw_sha256}.raw@{SYNTHETIC_ID_DOMAIN}"


def _dedup_ids(parsed: ParsedEmail) -> list[str]:
    ids = [parsed.message_id, synthetic_id(parsed)] if parsed.message_id else [synthetic_id(parsed)]
    return ids + ([raw_id(parsed)] if parsed.raw_sha256 else [])


def own_addresses() -> frozenset[str]:
    """Our inboxes' addresses, lower-cased: mail from them is automatic."""
    return frozenset(address.lower() for address in Inbox.objects.values_list("address", flat=True))


def known_conversation(conversation: Conversation, contact_address: str | None = None) -> KnownConversation:
    return KnownConversation(
        id=conversation.pk, public_id=conversation.public_id,
        contact_address=contact_address if contact_address is not None else conversation.contact.address,
        closed=conversation.status == ConversationStatus.CLOSED, closed_at=conversation.closed_at,
        last_message_at=conversation.last_message_at,
    )


def participants(message: Message) -> frozenset[str]:
    """The people a message was between: its sender and recipients (ours included), lower-cased;
    a reply from anyone else is flagged as a new participant."""
    return _people(message.from_address, message.to, message.cc)


def _people(from_address: str, to: list[dict], cc: list[dict]) -> frozenset[str]:
    people = [from_address] + [p.get("address", "") for p in [*to, *cc]]
    return frozenset(p.lower() for p in people if p)


class Lookups:
    """Stored rows that the messages of one batch refer to. See the module docstring."""

    def __init__(self, inbox: Inbox, batch: Sequence[ParsedEmail], *, own: frozenset[str] | None = None) -> None:
        self.inbox = inbox
        self.own = own_addresses() if own is None else own
        self._stored = self._load_stored([i for p in batch for i in _dedup_ids(p)])
        self._outgoing: dict[str, int] = {}  # filled by _load_known
        self._known = self._load_known({i for p in batch for i in p.thread_ids})
        self._tokens = self._load_tokens({i for p in batch for i in p.thread_ids})
        self._contacts = self._load_contacts({self.customer(p)[0].lower() for p in batch})
        # The latest state of conversations this batch touched, over what was loaded.
        self._conversations: dict[int, KnownConversation] = {}

    # --- loading (one query each) ------------------------------------------------------------
    def _load_stored(self, ids: list[str]) -> dict[str, Message]:
        if not ids:
            return {}
        # No ORDER BY: the unique (inbox, message_id) index answers directly.
        rows = Message.objects.filter(inbox=self.inbox, message_id__in=ids).order_by().only(*_DEDUP_FIELDS)
        return {row.message_id: row for row in rows}

    def _load_known(self, ids: set[str]) -> dict[str, KnownMessage]:
        if not ids:
            return {}
        # Plain values, not model instances: a batch of replies deep in long threads names
        # hundreds of stored messages, and building a Message and a Conversation for each
        # was a measurable part of ingest.
        rows = (
            Message.objects.filter(inbox=self.inbox)
            .filter(Q(message_id__in=ids) | Q(header_message_id__in=ids))
            .values_list("pk", "message_id", "header_message_id", "direction", "from_address", "to", "cc",
                         "conversation_id", *(f"conversation__{f}" for f in _CONVERSATION_FIELDS))
            .order_by()
        )
        entries = []
        for (pk, message_id, header_message_id, direction, from_address, to, cc, conversation_id,
             public_id, status, closed_at, last_message_at, contact_address) in rows:
            conversation = KnownConversation(
                id=conversation_id, public_id=public_id, contact_address=contact_address,
                closed=status == ConversationStatus.CLOSED, closed_at=closed_at, last_message_at=last_message_at)
            entries.append((pk, message_id, header_message_id, direction,
                            KnownMessage(conversation, _people(from_address, to or [], cc or []))))
        # Our outgoing messages among them: a bounce that quotes one marks it bounced.
        self._outgoing = {message_id: pk for pk, message_id, _h, direction, _e in entries
                          if direction == Direction.OUT}
        # A message stored under its own id wins over one that only carries it in its header
        # (the second of two messages sharing a Message-ID): own ids first, headers fill gaps.
        known = {message_id: entry for _pk, message_id, _h, _d, entry in entries if message_id in ids}
        for _pk, _m, header_message_id, _d, entry in entries:
            if header_message_id in ids:
                known.setdefault(header_message_id, entry)
        return known

    def _load_tokens(self, ids: set[str]) -> dict[str, KnownConversation]:
        tokens = {i: conversation_from_message_id(i) for i in ids}
        tokens = {i: public_id for i, public_id in tokens.items() if public_id is not None}
        if not tokens:
            return {}
        rows = (
            Conversation.objects.filter(inbox=self.inbox, public_id__in=tokens.values()).select_related("contact")
            .only(*_CONVERSATION_FIELDS).order_by()
        )
        by_public_id = {row.public_id: known_conversation(row) for row in rows}
        return {i: by_public_id[p] for i, p in tokens.items() if p in by_public_id}

    @staticmethod
    def _load_contacts(addresses: set[str]) -> dict[str, Contact]:
        # LOWER(address), the expression of the unique index, so the lookup is an index lookup.
        rows = Contact.objects.annotate(address_lower=Lower("address")).filter(address_lower__in=addresses)
        return {row.address.lower(): row for row in rows.order_by()}

    # --- answers -----------------------------------------------------------------------------
    def customer(self, parsed: ParsedEmail) -> tuple[str, str]:
        """(address, name) of the customer: where replies go (the one Reply-To of a message that
        is not list mail: web forms send from noreply@ with the customer there), else the From;
        for mail from one of our own inboxes, the first person it was written to."""
        address, name = (parsed.reply_address, parsed.reply_name) if parsed.reply_address else (
            parsed.from_address, parsed.from_name)
        if address.lower() in self.own:
            others = [p for p in [*parsed.to, *parsed.cc] if p["address"].lower() not in self.own]
            address, name = (others[0]["address"], others[0]["name"]) if others else (address, name)
        return address or UNKNOWN_SENDER, name

    def stored(self, message_id: str) -> Message | None:
        return self._stored.get(message_id)

    def outgoing(self, ids: Iterable[str]) -> list[int]:
        """The primary keys of our outgoing messages of the inbox stored under these ids (each
        id must be one of the batch's thread_ids)."""
        return list(dict.fromkeys(self._outgoing[i] for i in ids if i in self._outgoing))

    def contact(self, address: str) -> Contact | None:
        return self._contacts.get(address.lower())

    def known_messages(self, ids: Iterable[str]) -> dict[str, KnownMessage]:
        found = {i: self._known[i] for i in ids if i in self._known}
        return {i: self._current(entry) for i, entry in found.items()}

    def token_conversations(self, ids: Iterable[str], known: Iterable[str]) -> dict[str, KnownConversation]:
        skip = set(known)
        return {i: self._latest(self._tokens[i]) for i in ids if i in self._tokens and i not in skip}

    def _latest(self, conversation: KnownConversation) -> KnownConversation:
        return self._conversations.get(conversation.id, conversation)

    def _current(self, entry: KnownMessage) -> KnownMessage:
        latest = self._latest(entry.conversation)
        return entry if latest is entry.conversation else KnownMessage(latest, entry.participants)

    # --- keeping up with the batch -------------------------------------------------------------
    def update_conversation(self, conversation: KnownConversation) -> None:
        """A conversation's state as read or written in the database (status, times)."""
        self._conversations[conversation.id] = conversation

    def remember(self, message: Message, conversation: KnownConversation, contact: Contact) -> None:
        """A message of this batch is committed: later ones dedup and thread against it."""
        self._stored[message.message_id] = message
        self._contacts[contact.address.lower()] = contact
        self.update_conversation(conversation)
        entry = KnownMessage(conversation, participants(message))
        self._known[message.message_id] = entry
        if message.header_message_id:
            self._known.setdefault(message.header_message_id, entry)
