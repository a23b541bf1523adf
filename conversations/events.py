"""The one module that touches the channel layer. Events go out only after commit.

Groups: `department.<id>` for agents of a department, `managers` for managers.
Payloads carry public ids and a small dict; clients fetch details over HTTP.

Publishing never makes the caller wait for Redis: each process has one event loop on a
daemon thread and one queue, drained in order and in bursts, so events reach the layer in
the order they were published. `flush()` waits until everything published so far has been sent; it runs at
process exit too.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

MANAGERS_GROUP = "managers"
SEND_TIMEOUT_SECONDS = 5.0
# After the first event of a burst, wait this long for more: a bulk import publishes hundreds
# a second, and one look at the listening groups then serves a burst instead of each event.
BURST_LINGER_SECONDS = 0.02
QUEUE_LIMIT = 10_000  # past this (Redis down for long), new events are dropped and logged


def department_group(department_id: int) -> str:
    return f"department.{department_id}"


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
        while True:
            await self._wakeup.wait()
            # Wait a moment for more: one look at the listening groups then serves the burst.
            await asyncio.sleep(BURST_LINGER_SECONDS)
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
    """The groups that have at least one member, in one pipelined round trip per Redis host.

    group_send costs two round trips even for a group nobody listens to (most departments'
    groups while no agent is online, and every group during a bulk import). A stale member
    only makes us call group_send, which expires it; None means "could not tell: send all".
    """
    if not hasattr(layer, "_group_key") or not hasattr(layer, "consistent_hash"):
        return None  # not channels-redis' core layer
    by_host: dict[int, list[str]] = {}
    for group in groups:
        by_host.setdefault(layer.consistent_hash(group), []).append(group)
    listening = set()
    for index, host_groups in by_host.items():
        async with layer.connection(index).pipeline(transaction=False) as pipe:
            for group in host_groups:
                pipe.zcard(layer._group_key(group))
            counts = await pipe.execute()
        listening.update(group for group, count in zip(host_groups, counts, strict=True) if count)
    return listening


_publisher = _Publisher()
atexit.register(_publisher.flush)


def _send(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    if get_channel_layer() is None:
        return
    message = {"type": event_type, "event": event_type, "payload": payload}
    _publisher.submit((department_group(department_id), MANAGERS_GROUP), message)


def flush(timeout: float = SEND_TIMEOUT_SECONDS) -> None:
    """Wait until every event this process published has reached the channel layer."""
    _publisher.flush(timeout)


def publish(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    """Publish a dotted event (e.g. `message.status`) to a department once the transaction commits."""
    transaction.on_commit(lambda: _send(event_type, department_id, payload))
