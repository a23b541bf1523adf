"""Signals other modules send, so that features hook in without editing the sender.

`conversation_started`: ingest created a new conversation from an incoming email. Sent with
`message_id` (the incoming Message's primary key) and `inbox`, inside ingest's transaction or,
where transactions are pipelined (PostgreSQL), just after its COMMIT was confirmed; receivers
that act on it outside the database defer to `transaction.on_commit`, which covers both.
"""

from django.dispatch import Signal

conversation_started = Signal()
