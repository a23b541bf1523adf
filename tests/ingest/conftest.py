"""Fixtures for ingest tests: an inbox, the fixture mail, and the events agents would receive."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

from conversations.live.events import department_group, flush
from tests import factories

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def mail(name: str) -> bytes:
    """The bytes of a realistic message under tests/fixtures/mail/."""
    return (FIXTURES / "mail" / name).read_bytes()


@pytest.fixture
def inbox(db):
    return factories.InboxFactory(address="support@switchboard.test")


def compose(
    *,
    sender: str = "ada@example.com",
    subject: str = "Question",
    message_id: str | None = "q1@example.com",
    in_reply_to: str | None = None,
    body: str = "Hello",
    extra: str = "",
) -> bytes:
    """A small, valid message with the given threading headers."""
    lines = [f"From: {sender}", "To: support@switchboard.test", f"Subject: {subject}",
             "Date: Mon, 3 Feb 2025 09:00:00 +0000"]
    if message_id:
        lines.append(f"Message-ID: <{message_id}>")
    if in_reply_to:
        lines += [f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n" + body + "\r\n").encode()


class AgentEvents:
    """What an agent of one department hears on the real channel layer.

    Receiving never gives up half-way (a cancelled channels_redis receive can swallow the next
    message), so "nothing was sent" is shown with a marker: send one, then the marker must be
    the next thing heard.
    """

    MARK = "test.mark"

    def __init__(self, group: str, config: dict) -> None:
        self.group = group
        self.channel = f"test-agent-{uuid.uuid4().hex}"
        self.config = config

    async def _with_layer(self, action):
        # A layer per call: each async_to_sync runs its own event loop, and a layer's receive
        # buffers belong to the loop that first used them.
        layer = RedisChannelLayer(**self.config)
        try:
            return await action(layer)
        finally:
            await layer.close_pools()

    def join(self) -> None:
        async_to_sync(self._with_layer)(lambda layer: layer.group_add(self.group, self.channel))

    def leave(self) -> None:
        async_to_sync(self._with_layer)(lambda layer: layer.group_discard(self.group, self.channel))

    def mark(self) -> None:
        flush()  # everything the code under test published goes out before the marker
        message = {"type": self.MARK, "payload": {}}
        async_to_sync(self._with_layer)(lambda layer: layer.group_send(self.group, message))

    def receive(self, count: int) -> list[tuple[str, dict]]:
        async def take(layer: RedisChannelLayer) -> list[dict]:
            return [await asyncio.wait_for(layer.receive(self.channel), timeout=10) for _ in range(count)]

        return [(event["type"], event["payload"]) for event in async_to_sync(self._with_layer)(take)]


@pytest.fixture
def agent_events(inbox, settings):
    events = AgentEvents(department_group(inbox.department_id), settings.CHANNEL_LAYERS["default"]["CONFIG"])
    events.join()
    yield events
    events.leave()
