"""The one module that touches the channel layer. Events go out only after commit.

Groups: `department.<id>` for agents of a department, `managers` for managers.
Payloads carry public ids and a small dict; clients fetch details over HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

MANAGERS_GROUP = "managers"


def department_group(department_id: int) -> str:
    return f"department.{department_id}"


def _send(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": event_type, "event": event_type, "payload": payload}
    try:
        for group in (department_group(department_id), MANAGERS_GROUP):
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        # The row is committed and clients re-fetch on reconnect: a lost push is not lost data.
        logger.exception("Could not publish %s for department %s", event_type, department_id)


def publish(event_type: str, department_id: int, payload: dict[str, Any]) -> None:
    """Publish a dotted event (e.g. `message.status`) to a department once the transaction commits."""
    transaction.on_commit(lambda: _send(event_type, department_id, payload))
