"""The one module that touches the channel layer, and the catalogue of event types. Events go
out only after commit.

Groups: `department.<id>` for agents of a department, `managers` for managers, `agent.<id>`
for one agent's own sockets. Payloads carry public ids and a small dict; clients fetch
details over HTTP.

Publishing never makes the caller wait for Redis: each process has one event loop on a
daemon thread and one queue, drained in order and in bursts, so events reach the layer in
the order they were published. `flush()` waits until everything published so far has been sent; it runs at
process exit too.

Each stored event (not viewing or typing) gets an id and, per department, a sequence number,
and lands in that department's bounded replay log in Redis, so a client that reconnects gets
what it missed (`missed_since`) or is told to refetch. Numbers are handed out as events reach
the publisher. Two processes publishing to one department in the same millisecond may deliver
11 just before 10; a client that drops exactly between the two and resumes from 11 misses 10.
Within one process (one worker's transactions, in commit order) numbers follow publication.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from config.redis import get_redis

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# The catalogue: every event type there is. The consumer forwards exactly these.
# ---------------------------------------------------------------------------
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"  # status, priority, subject
CONVERSATION_ASSIGNED = "conversation.assigned"  # assignee (or none), reason
CONVERSATION_QUEUED = "conversation.queued"  # waiting in its department's queue
MESSAGE_CREATED = "message.created"
MESSAGE_STATUS = "message.status"  # delivery: queued, sending, sent, failed, uncertain, bounced
PRESENCE = "presence"  # an agent's presence changed
CONVERSATION_VIEWING = "conversation.viewing"  # from the sockets: never stored
CONVERSATION_TYPING = "conversation.typing"  # from the sockets: never stored
EVENT_TYPES = frozenset({
    CONVERSATION_CREATED, CONVERSATION_UPDATED, CONVERSATION_ASSIGNED, CONVERSATION_QUEUED, MESSAGE_CREATED,
    MESSAGE_STATUS, PRESENCE, CONVERSATION_VIEWING, CONVERSATION_TYPING,
})

MANAGERS_GROUP = "managers"
SEND_TIMEOUT_SECONDS = 5.0
# While events keep coming (the last burst went out less than BUSY_SECONDS ago), wait this long
# after the first of a burst for more: a bulk import publishes hundreds a second, and one look
# at the listening groups then serves a burst instead of each event. The first event after a
# quiet spell (an agent's reply, a new email) goes out at once.
BURST_LINGER_SECONDS = 0.02
BUSY_SECONDS = 0.2
QUEUE_LIMIT = 10_000  # past this (Redis down for long), new events are dropped and logged


def department_group(department_id: int) -> str:
    return f"department.{department_id}"


def agent_group(agent_id: int) -> str:
    return f"agent.{agent_id}"


class _Publisher:
    """A per-process event loop thread that sends what the process publishes, in order, in bursts.

    `async_to_sync` would build a new loop per call, and channels-redis keeps its connection
    pools per loop: every event then paid for a new Redis connection (~13 ms under load) and
    the caller waited for it. Publishers append to a deque and wake the loop only when no
    wake-up is already on its way: a bulk import that publishes hundreds of events a second
    wakes it once per burst, not once per event. The pid check gives each forked Celery child
    its own loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._wakeup: asyncio.Event | None = None
        self._pending: collections.deque[tuple[tuple[str, ...], dict[str, Any]]] = collections.deque()
        self._woken = False  # a wake-up is on its way to the loop
        self._submitted = 0  # events accepted so far (publishing threads)
        self._done = 0  # events sent, or given up on, so far (the loop's thread)

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="switchboard-events", daemon=True).start()
                # A forked child inherits its parent's queue and counters, not its thread.
                self._pending, self._woken, self._submitted, self._done = collections.deque(), False, 0, 0
                self._wakeup = asyncio.run_coroutine_threadsafe(self._make_event(), loop).result(SEND_TIMEOUT_SECONDS)
                asyncio.run_coroutine_threadsafe(self._drain(), loop)
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    @staticmethod
    async def _make_event() -> asyncio.Event:
        return asyncio.Event()

    async def _drain(self) -> None:
        assert self._wakeup is not None
        loop, last_burst = asyncio.get_running_loop(), float("-inf")
        while True:
            await self._wakeup.wait()
            if loop.time() - last_burst < BUSY_SECONDS:
                # Busy: wait a moment for more, so one look at the listening groups serves many.
                await asyncio.sleep(BURST_LINGER_SECONDS)
            last_burst = loop.time()
            self._wakeup.clear()
            with self._lock:
                self._woken = False  # from here on, a new event wakes us again
                burst = list(self._pending)
                self._pending.clear()
            if not burst:
                continue
            try:
                await self._send_burst(get_channel_layer(), burst)
            finally:
                self._done += len(burst)

    @classmethod
    async def _send_burst(cls, layer: Any, burst: list[tuple[tuple[str, ...], dict[str, Any]]]) -> None:
        try:
            sequence([message for _groups, message in burst])
        except Exception:
            # Clients that miss these will be told to refetch: the log's numbers skip them.
            logger.warning("Could not number events; sending them unnumbered", exc_info=True)
        try:
            listening = await _groups_with_members(layer, {group for groups, _ in burst for group in groups})
        except Exception:
            logger.warning("Could not look up listening groups; sending to all", exc_info=True)
            listening = None
        for groups, message in burst:
            try:
                for group in groups:
                    if listening is None or group in listening:
                        await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT_SECONDS)
            except Exception:
                # The row is committed and clients re-fetch on reconnect: a lost push is not lost data.
                logger.exception("Could not publish %s", message.get("event"))

    def submit(self, groups: tuple[str, ...], message: dict[str, Any]) -> None:
        loop = self._start()
        with self._lock:
            if len(self._pending) >= QUEUE_LIMIT:
                logger.error("Event queue full; dropped %s", message.get("event"))
                return
            self._pending.append((groups, message))
            self._submitted += 1
            wake, self._woken = not self._woken, True
        if wake:
            loop.call_soon_threadsafe(self._wakeup.set)

    def flush(self, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
            return
        with self._lock:
            target = self._submitted

        async def settle() -> None:
            while self._done < target:
                await asyncio.sleep(0.005)

        try:
            asyncio.run_coroutine_threadsafe(settle(), self._loop).result(timeout)
        except TimeoutError:
            logger.warning("Events still unsent after %.0f s", timeout)


async def _groups_with_members(layer: Any, groups: set[str]) -> set[str] | None:
    """The groups some web process listens to, in one pipelined round trip per Redis host.

    Publishing to a group nobody listens to (most departments' groups while no agent is online,
    and every group during a bulk import) is a round trip for nothing; so is the check, but one
    serves a whole burst. A web process subscribes once to each group one of its sockets joined
    (Redis pub/sub: PUBSUB NUMSUB counts processes). None means "could not tell: send to all".
    """
    inner = getattr(layer, "_get_layer", None)
    if inner is None:
        return None  # not channels-redis' pub/sub layer
    loop_layer = inner()
    by_shard: dict[Any, dict[str, str]] = {}
    for group in groups:
        channel = loop_layer._get_group_channel_name(group)
        by_shard.setdefault(loop_layer._get_shard(channel), {})[channel] = group
    listening = set()
    for shard, names in by_shard.items():
        shard._ensure_redis()
        counts = await shard._redis.pubsub_numsub(*names)
        listening.update(names[_text(channel)] for channel, count in counts if count)
    return listening


async def subscribed(layer: Any, groups: Iterable[str], timeout: float = SEND_TIMEOUT_SECONDS) -> None:
    """Wait until Redis counts a subscriber to each of these groups. A pub/sub SUBSCRIBE is
    sent, not confirmed: a socket that said "hello" before its groups were live could miss an
    event numbered before hello's numbers."""
    wanted, loop = set(groups), asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (listening := await _groups_with_members(layer, wanted)) is not None and not wanted <= listening:
        if loop.time() > deadline:
            logger.warning("Redis still counts no subscriber to %s", sorted(wanted - listening))
            return
        await asyncio.sleep(0.005)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_publisher = _Publisher()
atexit.register(_publisher.flush)


def groups_for(departments: int | Iterable[int] | None, agent_ids: Iterable[int | None] = ()) -> tuple[str, ...]:
    """Who hears an event: its departments' agents and the managers, and the agents named."""
    if departments is None:
        departments = ()
    elif isinstance(departments, int):
        departments = (departments,)
    groups = [department_group(department_id) for department_id in dict.fromkeys(departments)] + [MANAGERS_GROUP]
    groups.extend(agent_group(agent_id) for agent_id in dict.fromkeys(agent_ids) if agent_id is not None)
    return tuple(groups)


def _department_ids(departments: int | Iterable[int] | None) -> list[int]:
    if departments is None:
        return []
    if isinstance(departments, int):
        return [departments]
    return list(dict.fromkeys(departments))


def _send(event_type: str, departments: int | Iterable[int] | None, payload: dict[str, Any],
          agents: Iterable[int | None] = ()) -> None:
    """Hand an event to the publisher now. The message names its departments and agents, so
    each socket can apply the permission rule (conversations.live.audience) to what it hears."""
    if get_channel_layer() is None:
        return
    department_ids = _department_ids(departments)
    agent_ids = [agent_id for agent_id in dict.fromkeys(agents) if agent_id is not None]
    message = {"type": event_type, "event": event_type, "payload": payload,
               "departments": department_ids, "agents": agent_ids}
    _publisher.submit(groups_for(department_ids, agent_ids), message)


def flush(timeout: float = SEND_TIMEOUT_SECONDS) -> None:
    """Wait until every event this process published has reached the channel layer."""
    _publisher.flush(timeout)


def publish(event_type: str, department: int | Iterable[int] | None, payload: dict[str, Any], *,
            agents: Iterable[int | None] = ()) -> None:
    """Publish an event of the catalogue to a department or several (by primary key; the managers
    always hear it) and to the agents named, once the transaction commits; a rolled-back
    transaction publishes nothing."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"{event_type!r} is not in the event catalogue (conversations.live.events)")
    departments, agents = _department_ids(department), tuple(agents)
    transaction.on_commit(lambda: _send(event_type, departments, payload, agents))


def publish_now(event_type: str, department: int, payload: dict[str, Any], *, agents: Iterable[int] = ()) -> None:
    """Publish what a socket says (viewing, typing): nothing is stored, so nothing waits for a commit."""
    if event_type not in EPHEMERAL:
        raise ValueError(f"{event_type!r} is stored; publish it after commit with publish()")
    _send(event_type, department, payload, agents)


# ---------------------------------------------------------------------------
# Sequence numbers and the replay log
# ---------------------------------------------------------------------------
# Viewing and typing expire on their own: never numbered, never replayed.
EPHEMERAL = frozenset({CONVERSATION_VIEWING, CONVERSATION_TYPING})
_KEYS = "switchboard:events"
_ID_KEY = f"{_KEYS}:id"


def _seq_key(department_id: int) -> str:
    return f"{_KEYS}:seq:{department_id}"


def _log_key(department_id: int) -> str:
    return f"{_KEYS}:log:{department_id}"


def sequence(messages: list[dict[str, Any]]) -> None:
    """Give each message an id (one counter for all) and, per department, the next number of
    that department, and append it to each department's replay log: two round trips for a
    burst, whatever its size (a counter moves once per burst, by the burst's count). The counters
    never expire; a log keeps its last EVENT_REPLAY_LENGTH events, and expires
    EVENT_REPLAY_SECONDS after its last one."""
    numbered = [m for m in messages if m.get("departments") and m["event"] not in EPHEMERAL]
    if not numbered:
        return
    per_department = collections.Counter(d for message in numbered for d in message["departments"])
    redis = get_redis()
    with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(_ID_KEY, len(numbered))
        for department_id, count in per_department.items():
            pipe.incrby(_seq_key(department_id), count)
        last_id, *last_numbers = pipe.execute()
    # Each counter now ends at the burst's last number: hand the numbers out in order up to it.
    next_id = last_id - len(numbered) + 1
    next_number = {d: last - per_department[d] + 1 for d, last in zip(per_department, last_numbers, strict=True)}
    entries: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for offset, message in enumerate(numbered):
        message["id"] = next_id + offset
        # String keys: msgpack (the channel layer) refuses integer map keys when unpacking.
        message["seq"] = {}
        for department_id in message["departments"]:
            message["seq"][str(department_id)] = next_number[department_id]
            next_number[department_id] += 1
        entry = json.dumps(message, separators=(",", ":"))
        for department_id, number in message["seq"].items():
            entries[int(department_id)][entry] = number
    length, ttl = int(settings.EVENT_REPLAY_LENGTH), int(settings.EVENT_REPLAY_SECONDS)
    with redis.pipeline(transaction=False) as pipe:
        for department_id, mapping in entries.items():
            pipe.zadd(_log_key(department_id), mapping)
            pipe.zremrangebyrank(_log_key(department_id), 0, -length - 1)
            pipe.expire(_log_key(department_id), ttl)
        pipe.execute()


def current_sequences(department_ids: Iterable[int]) -> dict[int, int]:
    """The last number each department handed out (0: none yet)."""
    department_ids = list(department_ids)
    if not department_ids:
        return {}
    values = get_redis().mget([_seq_key(d) for d in department_ids])
    return {d: int(v or 0) for d, v in zip(department_ids, values, strict=True)}


@dataclass
class Missed:
    messages: list[dict[str, Any]] = field(default_factory=list)  # oldest first, each once
    refetch: list[int] = field(default_factory=list)  # departments whose gap the log no longer covers


def missed_since(last_seen: dict[int, int]) -> Missed:
    """What a client that saw up to `last_seen[department]` missed, from the replay logs."""
    missed, by_id = Missed(), {}
    redis = get_redis()
    for department_id, last in last_seen.items():
        with redis.pipeline(transaction=False) as pipe:
            pipe.get(_seq_key(department_id))
            pipe.zrange(_log_key(department_id), 0, 0, withscores=True)
            pipe.zrangebyscore(_log_key(department_id), last + 1, "+inf")
            current, oldest, entries = pipe.execute()
        current = int(current or 0)
        if current == last:
            continue
        # A counter behind the client (Redis was reset), or a log that starts after the gap.
        if current < last or not oldest or int(oldest[0][1]) > last + 1:
            missed.refetch.append(department_id)
            continue
        for entry in entries:
            message = json.loads(entry)
            by_id.setdefault(message["id"], message)
    missed.messages = [by_id[key] for key in sorted(by_id)]
    return missed


def replay_between(department_id: int, first: int, last: int) -> list[dict[str, Any]] | None:
    """The department's logged events numbered `first` to `last`, oldest first; None when the
    log no longer reaches back to `first`."""
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.zrange(_log_key(department_id), 0, 0, withscores=True)
        pipe.zrangebyscore(_log_key(department_id), first, last)
        oldest, entries = pipe.execute()
    if not oldest or int(oldest[0][1]) > first:
        return None
    return [json.loads(entry) for entry in entries]
