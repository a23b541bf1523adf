"""Signals other modules send, so that features hook in without editing the sender.

`conversation_started`: ingest created a new conversation from an incoming email. Sent inside
ingest's transaction with `message_id` (the incoming Message's primary key) and `inbox`; receivers that
act on it outside the database defer to `transaction.on_commit`.
"""

from django.dispatch import Signal

conversation_started = Signal()
