"""The one module that touches the channel layer. Events go out only after commit.

Groups: `department.<id>` for agents of a department, `managers` for managers.
Payloads carry public ids and a small dict; clients fetch details over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

MANAGERS_GROUP = "managers"
SEND_TIMEOUT_SECONDS = 5.0


def department_group(department_id: int) -> str:
    return f"department.{department_id}"


class _EventLoopThread:
    """One event loop per process, on a daemon thread, that all sync callers share.

    `async_to_sync` would build a new loop per call, and channels-redis keeps its connection
    pools per loop: every event then paid for a fresh Redis connection (~13 ms under load).
    The pid check gives each forked Celery child a loop of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="switchboard-events", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_loop_thread = _EventLoopThread()


async def _group_send(layer: Any, groups: tuple[str, ...], message: dict[str, Any]) -> None:
    for group in groups:
        await layer.group_send(group, message)


def _send(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": event_type, "event": event_type, "payload": payload}
    groups = (department_group(department_id), MANAGERS_GROUP)
    try:
        future = asyncio.run_coroutine_threadsafe(_group_send(layer, groups, message), _loop_thread.get())
        future.result(timeout=SEND_TIMEOUT_SECONDS)
    except Exception:
        # The row is committed and clients re-fetch on reconnect: a lost push is not lost data.
        logger.exception("Could not publish %s for department %s", event_type, department_id)


def publish(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    """Publish a dotted event (e.g. `message.status`) to a department once the transaction commits."""
    transaction.on_commit(lambda: _send(event_type, department_id, payload))
