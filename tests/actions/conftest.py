"""An event tap: a real channel on the real channel layer, in the groups an agent's socket joins."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.layers import get_channel_layer

from conversations.live import events


class EventTap:
    """Listens to groups as a console socket would; `take()` returns what arrived since the last call."""

    def __init__(self, *groups: str) -> None:
        events.flush()  # what was published before the tap is not the tap's
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        for group in groups:
            self.loop.run_until_complete(self.layer.group_add(group, self.channel))
        self.groups = groups

    def take(self, wait: float = 0.4) -> list[tuple[str, dict]]:
        events.flush()
        received = []

        async def drain() -> None:
            while True:
                try:
                    message = await asyncio.wait_for(self.layer.receive(self.channel), wait)
                except TimeoutError:
                    return
                received.append((message["event"], message["payload"]))

        self.loop.run_until_complete(drain())
        return received

    def types(self, wait: float = 0.4) -> list[str]:
        return [kind for kind, _payload in self.take(wait)]

    def close(self) -> None:
        for group in self.groups:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.layer.group_discard(group, self.channel))
        self.loop.close()


@pytest.fixture
def tap():
    taps: list[EventTap] = []

    def make(*groups: str) -> EventTap:
        taps.append(EventTap(*groups))
        return taps[-1]

    yield make
    for each in taps:
        each.close()
