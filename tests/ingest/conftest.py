"""Fixtures for ingest tests: an inbox, the fixture mail, and the events agents would receive."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

from conversations.events import department_group
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


@pytest.fixture
def agent_events(inbox, settings):
    """What an agent of the inbox's department hears on the real channel layer: a function that
    returns the (type, payload) pairs received since the last call."""
    channel = f"test-agent-{uuid.uuid4().hex}"
    group = department_group(inbox.department_id)

    def layer() -> RedisChannelLayer:
        # A layer per call: each async_to_sync runs its own event loop, and a layer's receive
        # buffers belong to the loop that first used them.
        return RedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])

    async def drain() -> list[dict]:
        own = layer()
        received = []
        try:
            while True:
                received.append(await asyncio.wait_for(own.receive(channel), timeout=0.5))
        except TimeoutError:
            return received
        finally:
            await own.close_pools()

    async def membership(join: bool) -> None:
        own = layer()
        await (own.group_add if join else own.group_discard)(group, channel)
        await own.close_pools()

    async_to_sync(membership)(True)
    yield lambda: [(event["type"], event["payload"]) for event in async_to_sync(drain)()]
    async_to_sync(membership)(False)
