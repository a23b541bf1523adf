"""Choosing the conversation an incoming message belongs to. Pure: the caller loads the candidates.

Order of evidence: In-Reply-To/References against the inbox's stored Message-IDs (ours and the
customers'); our own Message-IDs, which carry a signed conversation token even when we never
stored them in this inbox; a subject token "[#<12 hex digits>]". A message joins a conversation
only when its sender belongs there, so the replies of many recipients to one of our mailings
stay separate conversations. A closed conversation reopens within the reopen window; after it,
a new conversation starts, linked to the old one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

SUBJECT_TOKEN_DIGITS = 12
_SUBJECT_TOKEN = re.compile(rf"\[#([0-9a-fA-F]{{{SUBJECT_TOKEN_DIGITS}}})\]")


@dataclass(frozen=True)
class KnownConversation:
    id: int
    public_id: uuid.UUID
    contact_address: str
    closed: bool
    closed_at: datetime | None
    last_message_at: datetime


@dataclass(frozen=True)
class KnownMessage:
    """A stored message a reference points at, with the people it was between (lower-cased)."""

    conversation: KnownConversation
    participants: frozenset[str]


class Action(StrEnum):
    JOIN = "join"
    REOPEN = "reopen"
    NEW = "new"


@dataclass(frozen=True)
class ThreadChoice:
    action: Action
    conversation: KnownConversation | None = None  # the one to join or reopen
    previous: KnownConversation | None = None  # a closed one the new conversation follows up
    reason: str = ""


def subject_token(public_id: uuid.UUID) -> str:
    """The token our outgoing subjects may carry, e.g. "[#3f2a9c01b7de]"."""
    return f"[#{public_id.hex[:SUBJECT_TOKEN_DIGITS]}]"


def find_subject_token(subject: str) -> str | None:
    """The hex prefix of a conversation's public id named in a subject, lower-cased, or None."""
    match = _SUBJECT_TOKEN.search(subject)
    return match.group(1).lower() if match else None


def subject_token_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The public ids a token prefix covers, for an indexed range lookup."""
    padding = 32 - len(prefix)
    return uuid.UUID(hex=prefix + "0" * padding), uuid.UUID(hex=prefix + "f" * padding)


def _belongs(sender: str, conversation: KnownConversation, participants: frozenset[str] = frozenset()) -> bool:
    return sender == conversation.contact_address.lower() or sender in participants


def _reopen_or_follow(
    conversation: KnownConversation, reason: str, *, now: datetime, reopen_window: timedelta, archive: bool
) -> ThreadChoice:
    if not conversation.closed or archive:
        return ThreadChoice(Action.JOIN, conversation, reason=reason)
    closed_at = conversation.closed_at or conversation.last_message_at
    if now - closed_at <= reopen_window:
        return ThreadChoice(Action.REOPEN, conversation, reason=f"{reason}; reopened")
    return ThreadChoice(
        Action.NEW, previous=conversation, reason=f"{reason}; closed longer than the reopen window"
    )


def choose_conversation(
    *,
    sender: str,
    thread_ids: Sequence[str],
    known_messages: Mapping[str, KnownMessage],
    token_conversations: Mapping[str, KnownConversation],
    subject_conversation: KnownConversation | None,
    now: datetime,
    reopen_window: timedelta,
    archive: bool = False,
) -> ThreadChoice:
    """Pick a conversation for a message from `sender` (an address) answering `thread_ids`
    (most telling first). `known_messages` maps stored Message-IDs of the inbox to their
    messages; `token_conversations` maps thread ids that carry our signed token to their
    conversation; `subject_conversation` is the one a subject token names, if any."""
    sender = sender.lower()
    refused: KnownConversation | None = None
    follow = partial(_reopen_or_follow, now=now, reopen_window=reopen_window, archive=archive)
    for message_id in thread_ids:
        known = known_messages.get(message_id)
        if known is not None:
            if _belongs(sender, known.conversation, known.participants):
                return follow(known.conversation, f"answers {message_id}")
            refused = refused or known.conversation
            continue
        conversation = token_conversations.get(message_id)
        if conversation is not None:
            if _belongs(sender, conversation):
                return follow(conversation, f"answers our message {message_id}")
            refused = refused or conversation
    if subject_conversation is not None and _belongs(sender, subject_conversation):
        return follow(subject_conversation, "subject token")
    if refused is not None:
        return ThreadChoice(Action.NEW, reason=f"answers conversation {refused.public_id} from another sender")
    return ThreadChoice(Action.NEW, reason="no thread found")
