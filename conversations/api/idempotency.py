"""Idempotency-Key: a client that retries a reply or a note with the same key gets the message
the first request made, not a second one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django.db import transaction
from django.http import QueryDict
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from conversations.api.authentication import BotUser
from conversations.api.models import IdempotencyKey
from conversations.models import Message

HEADER = "Idempotency-Key"


def _scope(request: Request) -> str:
    if isinstance(request.user, BotUser):
        return f"agent:{request.user.agent.pk}"
    return f"user:{request.user.pk}"


def _fingerprint(request: Request) -> str:
    data = dict(request.data.lists()) if isinstance(request.data, QueryDict) else request.data
    blob = json.dumps([request.path, data], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def once(request: Request, make: Callable[[], Message]) -> tuple[Message, bool]:
    """`make()` the message, unless this caller's key already made one: (message, created)."""
    key = request.headers.get(HEADER, "").strip()
    if not key:
        return make(), True
    if len(key) > 255:
        raise ValidationError({HEADER: ["At most 255 characters."]})
    fingerprint = _fingerprint(request)
    # The key's row and the message commit together: a failed action leaves no key behind, and
    # a second request with the same key waits on the first's unique row, then finds its message.
    with transaction.atomic():
        row, created = IdempotencyKey.objects.select_related("message").get_or_create(
            scope=_scope(request), key=key, defaults={"fingerprint": fingerprint})
        if not created:
            if row.fingerprint != fingerprint:
                raise ValidationError({HEADER: ["This key was already used for a different request."]})
            return row.message, False
        message = make()
        IdempotencyKey.objects.filter(pk=row.pk).update(message=message)
    return message, True
