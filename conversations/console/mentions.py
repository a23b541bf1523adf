"""@mentions in internal notes: who a note names, recorded so the console can tell them."""

from __future__ import annotations

import re
from collections.abc import Iterable

from agents.models import Agent
from conversations.console.models import Mention
from conversations.models import Message

_AT = re.compile(r"(?<![\w@])@")


def mentioned(text: str, agents: Iterable[Agent]) -> list[Agent]:
    """The agents a text names as @Name or @username, longest name first (so "@Ann Lee" is not "@Ann")."""
    candidates = []
    for agent in agents:
        names = {agent.name.strip().lower()} if agent.name.strip() else set()
        if agent.user_id:
            names.add(agent.user.get_username().lower())
        candidates.extend((name, agent) for name in names)
    candidates.sort(key=lambda pair: -len(pair[0]))
    lowered, found = text.lower(), {}
    for match in _AT.finditer(lowered):
        rest = lowered[match.end():]
        for name, agent in candidates:
            if rest.startswith(name) and not rest[len(name):len(name) + 1].isalnum():
                found.setdefault(agent.pk, agent)
                break
    return list(found.values())


def record_mentions(note: Message, colleagues: Iterable[Agent]) -> list[Agent]:
    """Remember whom a note mentions (not its author, not agents without a user)."""
    people = [agent for agent in mentioned(note.text, colleagues)
              if agent.user_id and agent.pk != note.author_id]
    Mention.objects.bulk_create([Mention(user_id=agent.user_id, conversation_id=note.conversation_id, message=note)
                                 for agent in people], ignore_conflicts=True)
    return people

