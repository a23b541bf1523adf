"""Fixtures for ingest tests: an inbox, the fixture mail, and the events agents would receive."""

from __future__ import annotations

import asyncio
import queue
import threading
from pathlib import Path

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

from conversations.live.events import department_group, flush, subscribed
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
    """What an agent of one department hears on the real channel layer (Redis pub/sub).

    Like a web process, it listens all along: a loop on a thread of its own holds the layer's
    subscription and puts each message it hears on a queue. "Nothing was sent" is shown with a
    marker: send one, then the marker must be the next thing heard.
    """

    MARK = "test.mark"

    def __init__(self, group: str, config: dict) -> None:
        self.group = group
        self.layer = RedisPubSubChannelLayer(**config)
        self.heard: queue.Queue[dict] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-events", daemon=True)
        self.thread.start()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _listen(self) -> None:
        while True:
            self.heard.put(await self.layer.receive(self.channel))

    def join(self) -> None:
        async def start() -> None:
            self.channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, self.channel)
            await subscribed(self.layer, [self.group])
            self.listening = asyncio.ensure_future(self._listen())

        self._run(start())

    def leave(self) -> None:
        async def stop() -> None:
            self.listening.cancel()
            await asyncio.gather(self.listening, return_exceptions=True)
            await self.layer.group_discard(self.group, self.channel)
            await self.layer.flush()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def mark(self) -> None:
        flush()  # everything the code under test published goes out before the marker
        self._run(self.layer.group_send(self.group, {"type": self.MARK, "payload": {}}))

    def receive(self, count: int) -> list[tuple[str, dict]]:
        taken = [self.heard.get(timeout=10) for _ in range(count)]
        return [(event["type"], event["payload"]) for event in taken]


@pytest.fixture
def agent_events(inbox, settings):
    events = AgentEvents(department_group(inbox.department_id), settings.CHANNEL_LAYERS["default"]["CONFIG"])
    events.join()
    yield events
    events.leave()
