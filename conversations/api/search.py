"""Search conversations by subject, contact address or name, and message text.

On PostgreSQL: full-text search on expression indexes (migration api 0002), so ingest writes
no extra column and runs no trigger; a GIN index is all it maintains. Config 'simple' (no
stemming): mail arrives in every language, and addresses and names must match as written.
The expressions below render exactly as the indexes are defined, or the planner ignores them.
On SQLite: a plain case-insensitive substring match.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import BooleanField, CharField, Exists, F, Func, OuterRef, Q, QuerySet, Value

from conversations.models import Contact, Conversation, Message

# Bodies longer than this are indexed by their beginning: a tsvector holds at most 1 MB, and
# an index expression that fails would refuse the INSERT of a very long message.
INDEXED_TEXT_CHARS = 100_000


class Matches(Func):
    """to_tsvector('simple', <document>) @@ plainto_tsquery('simple', <query>)"""

    arg_joiner = ") @@ plainto_tsquery('simple', "
    template = "(to_tsvector('simple', %(expressions)s))"
    output_field = BooleanField()


class Beginning(Func):
    template = f"left(%(expressions)s, {INDEXED_TEXT_CHARS})"
    output_field = CharField()


class AddressAndName(Func):
    arg_joiner = " || ' ' || "
    template = "%(expressions)s"
    output_field = CharField()


def search(conversations: QuerySet[Conversation], query: str) -> QuerySet[Conversation]:
    query = " ".join(query.split())
    if not query:
        return conversations
    if connection.vendor == "postgresql":
        return _full_text(conversations, query)
    in_messages = Message.objects.filter(conversation=OuterRef("pk"), text__icontains=query)
    return conversations.filter(Q(subject__icontains=query) | Q(contact__address__icontains=query)
                                | Q(contact__name__icontains=query) | Exists(in_messages))


def _full_text(conversations: QuerySet[Conversation], query: str) -> QuerySet[Conversation]:
    words = Value(query)
    contacts = Contact.objects.filter(Matches(AddressAndName(F("address"), F("name")), words)).values("pk")
    messages = Message.objects.filter(Matches(Beginning(F("text")), words)).values("conversation_id")
    # Each part is a subquery its own index answers; a match on the subject inline would be
    # computed for every conversation of the caller's departments instead.
    subjects = Conversation.objects.filter(Matches(F("subject"), words)).values("pk")
    return conversations.filter(Q(pk__in=subjects) | Q(contact__in=contacts) | Q(pk__in=messages))
