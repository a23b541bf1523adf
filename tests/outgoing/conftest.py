"""Helpers for the outgoing-mail tests: an inbox wired to the test SMTP server, a customer's
conversation to answer, and an ear on the channel layer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from conversations.live.events import department_group
from conversations.models import Direction
from tests import factories
from tests.actions.conftest import EventTap


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
    """Listens on a department's group, as an agent's socket would (the actions tests' tap)."""

    def __init__(self, department_id: int) -> None:
        self.tap = EventTap(department_group(department_id))

    def receive_all(self, timeout: float = 1.0) -> list[dict]:
        return [{"type": kind, "payload": payload} for kind, payload in self.tap.take(timeout)]


@pytest.fixture
def event_ear(people):
    ear = EventEar(people.department_a.pk)
    yield ear
    ear.tap.close()
