"""Choosing the conversation an incoming message belongs to. Pure: the caller loads the candidates.

Threads follow the headers: a message whose In-Reply-To or References name a message of a
conversation of the inbox (ours or a customer's, found stored or through the signed token of our
own Message-IDs) joins that conversation, whoever sent it — a colleague in copy answering, the
customer writing from another address, someone a reply was forwarded to. A sender who was not
yet part of it is flagged as a new participant; that is all the headers can earn: an incoming
message never becomes anybody's action. A subject token "[#<12 hex digits>]" alone is weaker
evidence (anyone can type it) and threads only the conversation's own customer. A closed
conversation reopens within the reopen window; after it, a new conversation starts, linked to
the old one.
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
    new_participant: bool = False  # joins, though its sender was not yet part of the conversation


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


def _belongs(senders: frozenset[str], conversation: KnownConversation,
             participants: frozenset[str] = frozenset()) -> bool:
    return conversation.contact_address.lower() in senders or not senders.isdisjoint(participants)


def _reopen_or_follow(
    conversation: KnownConversation, reason: str, *, now: datetime, reopen_window: timedelta, archive: bool,
    new_participant: bool = False,
) -> ThreadChoice:
    if new_participant:
        reason = f"{reason}; its sender is new to the conversation"
    if not conversation.closed or archive:
        return ThreadChoice(Action.JOIN, conversation, reason=reason, new_participant=new_participant)
    closed_at = conversation.closed_at or conversation.last_message_at
    if now - closed_at <= reopen_window:
        return ThreadChoice(Action.REOPEN, conversation, reason=f"{reason}; reopened", new_participant=new_participant)
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
    also_from: str = "",
) -> ThreadChoice:
    """Pick a conversation for a message from `sender` (an address) answering `thread_ids`
    (most telling first). `known_messages` maps stored Message-IDs of the inbox to their
    messages; `token_conversations` maps thread ids that carry our verified token to their
    conversation; `subject_conversation` is the one a subject token names, if any.
    `also_from`: the From address, when `sender` is the Reply-To's; either one belongs."""
    senders = frozenset(address.lower() for address in (sender, also_from) if address)
    follow = partial(_reopen_or_follow, now=now, reopen_window=reopen_window, archive=archive)
    for message_id in thread_ids:
        known = known_messages.get(message_id)
        conversation = known.conversation if known is not None else token_conversations.get(message_id)
        if conversation is None:
            continue
        reason = f"answers {message_id}" if known is not None else f"answers our message {message_id}"
        # Everyone on the messages of that conversation this one refers to counts as its people.
        people = frozenset().union(*(entry.participants for entry in known_messages.values()
                                     if entry.conversation.id == conversation.id))
        return follow(conversation, reason, new_participant=not _belongs(senders, conversation, people))
    if subject_conversation is not None and _belongs(senders, subject_conversation):
        return follow(subject_conversation, "subject token")
    if subject_conversation is not None:
        return ThreadChoice(Action.NEW, reason="a subject token from someone not in that conversation")
    return ThreadChoice(Action.NEW, reason="no thread found")
