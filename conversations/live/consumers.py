"""The console's websocket: authenticate, join the permitted groups, forward events.

It hears from the client only presence ("away" / "online"), heartbeats, what the agent is
viewing or typing in (published to the department, never stored), and "resume" with the last
sequence numbers the client saw; it writes nothing else. Every few seconds
(LIVE_RECHECK_SECONDS) one recheck for all of the process's sockets (_Recheck) rebuilds what
each user may hear from the database and the session, leaving groups an agent lost or closing
a socket whose user may no longer listen, and renews the sockets' presence.

A client that resumes (the console always does, right after "hello") gets what it missed and,
from then on, each event with `seq`: {department public id: number}. An agent's socket is in
their departments' groups and their own, so one event can arrive twice; the event id keeps it
to one.

The channel layer is Redis pub/sub: an event published while a web process is reconnecting to
Redis does not reach it. So each socket watches its numbers. A number skipped is looked up in
the replay log after GAP_WAIT_SECONDS (another process's event may simply come second), and
the recheck notices a department whose counter moved past what a socket heard. Whatever the
log still holds is sent; a department whose gap it no longer covers gets "refetch".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents.models import Agent
from conversations import enqueue
from conversations.live import events
from conversations.live import presence as live_presence
from conversations.live.audience import Listener, listener_for, listeners_for, may_hear
from conversations.live.events import MANAGERS_GROUP, agent_group, department_group
from conversations.models import Conversation

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_LONGER_ALLOWED = 4403
COLLISION_EXPIRES_SECONDS = 10  # a viewing/typing notice lasts this long unless repeated
GAP_WAIT_SECONDS = 1.0  # a skipped number may still come (two publishers): look it up after this
_RECENT_IDS = 512
# An event reaches every socket of the process with the same text: encode it once, not per socket.
_ENCODED_KEPT = 64
_encoded: collections.OrderedDict[tuple[int, tuple[str, ...]], str] = collections.OrderedDict()


def _groups(listener: Listener) -> set[str]:
    groups = {MANAGERS_GROUP} if listener.departments is None else {department_group(d) for d in listener.departments}
    if listener.agent_id is not None:
        groups.add(agent_group(listener.agent_id))
    return groups


def _department_of(public_id: str) -> int | None:
    return Conversation.objects.filter(public_id=public_id).values_list("department_id", flat=True).first()


class _Recheck:
    """Every LIVE_RECHECK_SECONDS, all of this event loop's (this web process's) console sockets
    are rechecked at once: one look at the database for what each user may hear now (a few
    queries, however many sockets), one Redis round trip for their heartbeats. Per socket, the
    same work cost a database hop and a Redis round trip each: 500 idle sockets kept the web process's
    core busy."""

    def __init__(self) -> None:
        self.sockets: set[ConsoleConsumer] = set()
        self.task: asyncio.Task | None = None
        self.counted: dict[int, int] = {}

    def add(self, socket: ConsoleConsumer) -> None:
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def discard(self, socket: ConsoleConsumer) -> None:
        self.sockets.discard(socket)

    async def _run(self) -> None:
        while self.sockets:
            await asyncio.sleep(float(settings.LIVE_RECHECK_SECONDS))
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Could not recheck the console sockets", exc_info=True)

    async def once(self) -> None:
        sockets = [socket for socket in self.sockets if socket.listener is not None]
        if not sockets:
            return
        listeners = await database_sync_to_async(listeners_for)({(s.user_id, s.session_key) for s in sockets})
        # Each department's counter as the last recheck read it: a socket still below it a
        # recheck later lost the events in between on the way.
        departments = {d for socket in sockets for d in socket.highest}
        counted, self.counted = self.counted, await sync_to_async(events.current_sequences, thread_sensitive=False)(
            departments)
        for socket in sockets:
            for department_id, number in counted.items():
                socket._heard_of(department_id, number)
        beats = []
        for socket in sockets:
            if socket not in self.sockets:
                continue  # closed meanwhile
            listener = listeners.get((socket.user_id, socket.session_key))
            if listener is None:
                self.discard(socket)
                await socket.close(code=CLOSE_NO_LONGER_ALLOWED)
                continue
            await socket._listen(listener)
            if socket._present:
                beats.append((listener.agent_id, socket.channel_name))
        await sync_to_async(live_presence.heartbeats, thread_sensitive=False)(beats)


_rechecks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Recheck] = weakref.WeakKeyDictionary()


def _recheck() -> _Recheck:
    loop = asyncio.get_running_loop()
    if loop not in _rechecks:
        _rechecks[loop] = _Recheck()
    return _rechecks[loop]


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: set[str]
    listener: Listener | None = None

    async def connect(self) -> None:
        self.groups_joined, self.resumed = set(), False
        # Per department: the highest number sent to this client, and those below it not sent.
        self.highest: dict[int, int] = {}
        self.missing: dict[int, set[int]] = collections.defaultdict(set)
        self.filling: asyncio.Task | None = None
        self.recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.user_id = user.pk
        listener = await database_sync_to_async(listener_for)(self.user_id, self.session_key)
        if listener is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self._listen(listener)
        await events.subscribed(self.channel_layer, self.groups_joined)
        await self.accept()
        current = await sync_to_async(events.current_sequences, thread_sensitive=False)(listener.public_ids)
        self.hello_seq = current
        await self.send_json({"event": "hello", "payload": {
            "groups": len(self.groups_joined), "agent": listener.agent_public_id,
            "seq": {listener.public_ids[d]: n for d, n in current.items()}}})
        if self._present:
            opened = sync_to_async(live_presence.socket_opened, thread_sensitive=False)
            await opened(listener.agent_id, self.channel_name)
            await database_sync_to_async(self._reconcile)()
        _recheck().add(self)

    @property
    def _present(self) -> bool:
        return self.listener is not None and self.listener.agent_id is not None and self.listener.human

    def _reconcile(self) -> None:
        agent = Agent.objects.filter(pk=self.listener.agent_id).first()
        if agent is not None:
            live_presence.reconcile(agent)

    async def _listen(self, listener: Listener) -> None:
        """Join the groups this listener may hear and leave the others."""
        wanted = _groups(listener)
        self.listener = listener
        for department_id in [d for d in self.highest if d not in listener.public_ids]:
            del self.highest[department_id]  # no longer heard: count afresh if it comes back
            self.missing.pop(department_id, None)
        for group in self.groups_joined - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
        for group in wanted - self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = wanted

    async def disconnect(self, code: int) -> None:
        _recheck().discard(self)
        if getattr(self, "filling", None) is not None:
            self.filling.cancel()
        for group in getattr(self, "groups_joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)
        if self._present:
            agent_id = self.listener.agent_id
            await sync_to_async(live_presence.socket_closed, thread_sensitive=False)(agent_id, self.channel_name)
            # Offline only if no other socket of theirs opens within the grace (a reload).
            countdown = int(settings.PRESENCE_GRACE_SECONDS) + 1
            await sync_to_async(enqueue.send, thread_sensitive=False)(enqueue.RECONCILE_PRESENCE, agent_id,
                                                                      countdown=countdown)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # An event from the channel layer touches no database: skip Channels' closing of old
        # database connections before each handler, a hop to the database thread for every
        # event and every socket (500 hops for one event to 500 sockets).
        if message.get("type") in events.EVENT_TYPES:
            await self.forward(message)
            return
        await super().dispatch(message)

    # -- from the client ----------------------------------------------------------------------
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        handler = {"heartbeat": self._heartbeat, "presence": self._presence, "viewing": self._collision,
                   "typing": self._collision, "resume": self._resume}.get(kind)
        if handler is None:
            await self.send_json({"event": "error", "payload": {"detail": f"unknown message type {kind!r}"}})
            return
        await handler(content)

    async def _heartbeat(self, content: dict[str, Any]) -> None:
        if self._present:
            beat = sync_to_async(live_presence.heartbeat, thread_sensitive=False)
            await beat(self.listener.agent_id, self.channel_name)

    async def _presence(self, content: dict[str, Any]) -> None:
        if not self._present or content.get("presence") not in ("away", "online"):
            await self.send_json({"event": "error", "payload": {"detail": "presence is 'away' or 'online'"}})
            return
        await sync_to_async(live_presence.set_away, thread_sensitive=False)(self.listener.agent_id,
                                                                       content["presence"] == "away")
        await database_sync_to_async(self._reconcile)()

    async def _collision(self, content: dict[str, Any]) -> None:
        listener, public_id = self.listener, str(content.get("conversation") or "")
        if listener is None or listener.agent_public_id is None or not public_id:
            return
        try:
            department_id = await database_sync_to_async(_department_of)(public_id)
        except Exception:  # not a UUID
            department_id = None
        if department_id is None or not may_hear(listener, [department_id]):
            return  # never confirm that a conversation of another department exists
        event = events.CONVERSATION_VIEWING if content["type"] == "viewing" else events.CONVERSATION_TYPING
        events.publish_now(event, department_id, {"conversation": public_id, "agent": listener.agent_public_id,
                                                  "expires_in": COLLISION_EXPIRES_SECONDS})

    async def _resume(self, content: dict[str, Any]) -> None:
        listener = self.listener
        by_public = {public: pk for pk, public in listener.public_ids.items()}
        seen = content.get("seq") if isinstance(content.get("seq"), dict) else {}
        last_seen = {by_public[key]: int(value) for key, value in seen.items()
                     if key in by_public and isinstance(value, int) and value >= 0}
        self.resumed = True
        self.highest = {**self.hello_seq, **last_seen}
        missed = await sync_to_async(events.missed_since, thread_sensitive=False)(last_seen)
        for message in missed.messages:
            await self.forward(message)
        if missed.refetch:
            await self.send_json({"event": "refetch", "payload": {
                "departments": [listener.public_ids[d] for d in missed.refetch]}})

    # -- from the channel layer ---------------------------------------------------------------
    async def forward(self, message: dict[str, Any]) -> None:
        listener, event_id = self.listener, message.get("id")
        if listener is None:
            return
        if event_id is not None:
            if event_id in self.recent:
                return
            self.recent[event_id] = None
            if len(self.recent) > _RECENT_IDS:
                self.recent.popitem(last=False)
        if not may_hear(listener, message.get("departments") or (), message.get("agents") or ()):
            return
        seq = message.get("seq") if self.resumed else None
        visible = tuple(d for d in seq if int(d) in listener.public_ids) if seq else ()
        for department in visible:
            self._heard(int(department), seq[department])
        key = (event_id, visible)
        text = _encoded.get(key) if event_id is not None else None
        if text is None:
            out = {"event": message["event"], "payload": message["payload"]}
            if visible:
                out["seq"] = {listener.public_ids[int(d)]: seq[d] for d in visible}
            text = await self.encode_json(out)
            if event_id is not None:
                _encoded[key] = text
                if len(_encoded) > _ENCODED_KEPT:
                    _encoded.popitem(last=False)
        await self.send(text_data=text)

    # -- numbers skipped on the way -------------------------------------------------------------
    def _heard(self, department_id: int, number: int) -> None:
        highest = self.highest.get(department_id)
        if highest is None or number > highest:
            if highest is not None and number > highest + 1:
                self._skipped(department_id, range(highest + 1, number))
            self.highest[department_id] = number
        else:
            self.missing[department_id].discard(number)

    def _heard_of(self, department_id: int, number: int) -> None:
        """The department's counter stood at `number` a recheck ago."""
        highest = self.highest.get(department_id)
        if highest is not None and number > highest:
            self._skipped(department_id, range(highest + 1, number + 1))
            self.highest[department_id] = number

    def _skipped(self, department_id: int, numbers: range) -> None:
        self.missing[department_id].update(numbers[-int(settings.EVENT_REPLAY_LENGTH):])
        if self.filling is None or self.filling.done():
            self.filling = asyncio.ensure_future(self._fill())

    async def _fill(self) -> None:
        await asyncio.sleep(GAP_WAIT_SECONDS)
        refetch = []
        for department_id in list(self.missing):
            numbers = self.missing.pop(department_id)
            if not numbers or self.listener is None or department_id not in self.listener.public_ids:
                continue
            try:
                logged = await sync_to_async(events.replay_between, thread_sensitive=False)(
                    department_id, min(numbers), max(numbers))
            except Exception:
                logger.warning("Could not read the replay log", exc_info=True)
                logged = None
            key = str(department_id)
            found = [m for m in logged or () if m.get("seq", {}).get(key) in numbers]
            if logged is None or len(found) < len(numbers):
                refetch.append(self.listener.public_ids[department_id])
            for message in found:
                await self.forward(message)
        if refetch:
            await self.send_json({"event": "refetch", "payload": {"departments": refetch}})
        if any(self.missing.values()):  # skipped while this look-up ran
            self.filling = asyncio.ensure_future(self._fill())

    # Channels maps an event of type `message.status` to the method `message_status`: one per
    # type of the catalogue (tests/foundation/test_layers.py checks none is missing).
    conversation_created = conversation_updated = conversation_assigned = conversation_queued = forward
    message_created = message_status = presence = conversation_viewing = conversation_typing = forward
