"""The console websocket: strangers are refused; agents hear only their departments."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from conversations.live.consumers import ConsoleConsumer
from conversations.live.events import publish


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A layer of this test's own: channels-redis keeps connections per event loop, and an
    earlier test's loop (closed since) must not own the connection this test waits on."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def _connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(ConsoleConsumer.as_asgi(), "/ws/console/")
    communicator.scope["user"] = user
    return communicator


async def _received(communicator: WebsocketCommunicator) -> list[dict]:
    """Everything the socket got within a second (receive_nothing does not cancel the app on timeout)."""
    events = []
    while not await communicator.receive_nothing(timeout=1):
        event = await communicator.receive_json_from(timeout=5)
        if event["event"] != "presence":  # colleagues coming online, as the sockets connect
            events.append(event)
    return events


@pytest.mark.django_db(transaction=True)
def test_anonymous_websocket_is_refused():
    async def scenario():
        communicator = await _connect(AnonymousUser())
        connected, code = await communicator.connect(timeout=10)
        assert connected is False
        assert code == 4401

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_agents_hear_only_their_departments_and_managers_hear_all(people):
    async def scenario():
        sockets = {}
        for name, user in (("a", people.agent_a.user), ("b", people.agent_b.user), ("m", people.manager)):
            sockets[name] = await _connect(user)
            connected, _ = await sockets[name].connect()
            assert connected
            hello = await sockets[name].receive_json_from(timeout=5)
            assert hello["event"] == "hello"

        await asyncio.get_running_loop().run_in_executor(
            None, lambda: publish("message.status", people.department_a.id, {"message": "m-1", "status": "sent"})
        )
        received = {name: await _received(socket) for name, socket in sockets.items()}
        for socket in sockets.values():
            await socket.disconnect()
        return received

    received = async_to_sync(scenario)()
    assert received["a"] == [{"event": "message.status", "payload": {"message": "m-1", "status": "sent"}}]
    assert received["b"] == []
    assert received["m"] == [{"event": "message.status", "payload": {"message": "m-1", "status": "sent"}}]
