"""Throttling per token (each has its own allowance) and per signed-in user, counted in Redis
so every web process shares one count."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from config.redis import get_redis

WINDOW_SECONDS = 60


def caller_key(request: Request) -> str | None:
    token = request.auth
    if token is not None and hasattr(token, "public_id"):
        return f"token:{token.public_id}"
    if request.user and request.user.is_authenticated and request.user.pk is not None:
        return f"user:{request.user.pk}"
    return None  # anonymous callers are refused by authentication anyway


class PerCallerThrottle(BaseThrottle):
    """A fixed window of API_THROTTLE_PER_MINUTE requests per caller."""

    def allow_request(self, request: Request, view: object) -> bool:
        key = caller_key(request)
        if key is None:
            return True
        window = int(time.time() // WINDOW_SECONDS)
        self.window_ends = (window + 1) * WINDOW_SECONDS
        name = f"switchboard:throttle:{key}:{window}"
        redis = get_redis()
        count, _ = redis.pipeline().incr(name).expire(name, WINDOW_SECONDS * 2).execute()
        return count <= settings.API_THROTTLE_PER_MINUTE

    def wait(self) -> float:
        return max(0.0, self.window_ends - time.time())
