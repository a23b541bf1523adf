"""The console's websocket: authenticate, join the permitted groups, forward events. No writes."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from conversations.events import MANAGERS_GROUP, department_group
from conversations.permissions import department_ids_for


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        departments = await database_sync_to_async(department_ids_for)(user)
        groups = [MANAGERS_GROUP] if departments is None else [department_group(d) for d in sorted(departments)]
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        await self.accept()
        await self.send_json({"event": "hello", "payload": {"groups": len(groups)}})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def forward(self, message: dict[str, Any]) -> None:
        await self.send_json({"event": message["event"], "payload": message["payload"]})

    # Channels maps an event of type `message.status` to the method `message_status`.
    message_status = forward
    message_created = forward
    conversation_created = forward
    conversation_updated = forward
    conversation_assigned = forward
