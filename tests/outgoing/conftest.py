"""Helpers for the outgoing-mail tests: an inbox wired to the test SMTP server, a customer's
conversation to answer, and an ear on the channel layer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.live.events import department_group
from conversations.models import Direction
from tests import factories


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy (slow CI machines get the whole timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


@pytest.fixture
def inbox_for(people):
    """`inbox_for(server, **fields)`: an inbox of department A that sends through `server`."""
    def make(server, **fields):
        defaults = {"address": "support@switchboard.test", "display_name": "Support", "sender_name": "Acme Support",
                    "department": people.department_a, **server.inbox_settings()}
        return factories.InboxFactory(**{**defaults, **fields})
    return make


@pytest.fixture
def customer_thread():
    """`customer_thread(inbox)`: a conversation whose customer wrote twice; returns (conversation, latest)."""
    def make(inbox, subject: str = "RE: Re[2]: Printer on fire"):
        contact = factories.ContactFactory(address="ann@example.test", name="Ann Customer")
        conversation = factories.ConversationFactory(inbox=inbox, contact=contact, subject="Printer on fire")
        factories.MessageFactory(conversation=conversation, direction=Direction.IN, message_id="first@example.test",
                                 subject="Printer on fire")
        latest = factories.MessageFactory(
            conversation=conversation, direction=Direction.IN, message_id="second@example.test",
            subject=subject, in_reply_to="<first@example.test>", references="<first@example.test>")
        return conversation, latest
    return make


class EventEar:
    """Listens on a department's group, as an agent's socket would."""

    def __init__(self, department_id: int) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(department_group(department_id), self.channel)

    def receive_all(self, timeout: float = 1.0) -> list[dict]:
        import asyncio

        async def drain() -> list[dict]:
            events = []
            while True:
                try:
                    events.append(await asyncio.wait_for(self.layer.receive(self.channel), timeout))
                except TimeoutError:
                    return events
        return async_to_sync(drain)()


@pytest.fixture
def event_ear(people):
    return EventEar(people.department_a.pk)
