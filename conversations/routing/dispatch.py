"""When routing runs: a new conversation, capacity that frees, an agent who comes online.

Ingest stores conversations in bursts; each asks for its department's queue to be drained
once it commits. A flag in Redis coalesces the asks: while a drain of the department is asked
for and has not started, another ask sends nothing (the drain, when it starts, clears the flag
and then reads the whole queue, so nothing asked for is missed). The flag expires on its own,
so a lost task delays routing by at most that long, and the beat sweep drains every queue anyway.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from django.db import transaction

from config.redis import get_redis
from conversations import enqueue
from conversations.routing.queue import waiting

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 2
# The asking thread makes one round of asks at most this often. A burst of new conversations
# (a backlog polled at hundreds a second) then costs a few Redis round trips a second, not one
# each; the first ask after a quiet moment still goes at once, and every ask goes out after the
# commit that made it, so no conversation waits for more than this and the drain it starts.
ASK_ROUND_SECONDS = 0.2


def _pending_key(department_id: int) -> str:
    return f"switchboard:routing:drain-asked:{department_id}"


def request_drain(department_id: int) -> None:
    """Have the department's queue drained by a worker, unless a drain is already on its way."""
    try:
        if not get_redis().set(_pending_key(department_id), "1", nx=True, ex=COALESCE_SECONDS):
            return
    except Exception:
        logger.warning("Could not coalesce a drain of department %s; asking anyway", department_id, exc_info=True)
    enqueue.send(enqueue.DRAIN_QUEUE, department_id)


def drain_started(department_id: int) -> None:
    """A drain task begins: asks from now on need a drain of their own."""
    try:
        get_redis().delete(_pending_key(department_id))
    except Exception:
        logger.warning("Could not clear the drain flag of department %s", department_id, exc_info=True)


class _Asker:
    """Asks for drains on a thread of its own. Ingest commits hundreds of new conversations a
    second, and each ask is a Redis round trip (and now and then a Celery send) that held up
    the next message: ~0.5 ms of ingest's ~4 a message. Asks for one department that arrive
    while the thread is busy, or within ASK_ROUND_SECONDS of its last round, become one. A
    forked process (a Celery child) starts its own thread; `flush` runs at exit."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: dict[int, None] = {}
        self._busy = False
        self._pid: int | None = None

    def ask(self, department_id: int) -> None:
        with self._changed:
            if self._pid != os.getpid():
                self._pid, self._pending, self._busy = os.getpid(), {}, False
                threading.Thread(target=self._run, name="switchboard-drain-asks", daemon=True).start()
            self._pending[department_id] = None
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending))
                asks, self._pending, self._busy = list(self._pending), {}, True
            started = time.monotonic()
            try:
                for department_id in asks:
                    request_drain(department_id)
            except Exception:  # request_drain logs its own failures; this keeps the thread alive
                logger.exception("Could not ask for drains of %s", asks)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
            # Asks that come meanwhile wait for the next round, and become one per department.
            time.sleep(max(0.0, ASK_ROUND_SECONDS - (time.monotonic() - started)))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every ask made so far in this process was made."""
        with self._changed:
            if self._pid == os.getpid():
                self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)


_asker = _Asker()
atexit.register(_asker.flush)


def flush_asks(timeout: float = 5.0) -> None:
    _asker.flush(timeout)


def on_conversation_started(sender: Any, message_id: int, **kwargs: Any) -> None:
    """Receiver of conversations.signals.conversation_started: route once ingest commits."""
    inbox = kwargs.get("inbox")
    if inbox is None:
        return
    department_id = inbox.department_id
    transaction.on_commit(lambda: _asker.ask(department_id))


def _drain_if_waiting(department_ids: list[int]) -> None:
    for department_id in department_ids:
        if waiting(department_id).exists():
            request_drain(department_id)


def on_capacity_changed(department_ids: list[int]) -> None:
    """An agent's capacity, enabled flag or departments changed, or a department's default
    capacity: once that commits, drain the queues that have something waiting."""
    if department_ids:
        transaction.on_commit(lambda: _drain_if_waiting(department_ids))


def on_agent_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        on_capacity_changed(list(instance.departments.values_list("pk", flat=True)))


def on_agent_departments_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
                                 **kwargs: Any) -> None:
    if action != "post_add" or not pk_set:
        return
    on_capacity_changed([instance.pk] if reverse else sorted(pk_set))


def on_department_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        on_capacity_changed([instance.pk])
