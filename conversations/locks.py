"""A lock in Redis that only its holder can release: one poller per inbox, however many workers."""

from __future__ import annotations

import secrets

from config.redis import get_redis

# Delete the key only if it still holds our token: after an expiry another worker may own it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    def __init__(self, name: str, ttl_seconds: int) -> None:
        self.key = f"switchboard:lock:{name}"
        self.ttl = max(1, int(ttl_seconds))
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        return bool(get_redis().set(self.key, self.token, nx=True, ex=self.ttl))

    def release(self) -> bool:
        return bool(get_redis().eval(_RELEASE, 1, self.key, self.token))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
