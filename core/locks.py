"""A lock in Redis that only its holder can release: one poller per inbox, however many workers.

The lock is short and renewed while its holder works (`kept_alive`), so a holder that dies
(a killed worker) blocks the next one for at most one lock length, however long work may last.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Iterator

from config.redis import get_redis

logger = logging.getLogger(__name__)

# Delete the key only if it still holds our token: after an expiry another worker may own it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Extend the key only if it still holds our token, for the same reason.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class RedisLock:
    def __init__(self, name: str, ttl_seconds: float) -> None:
        self.key = f"switchboard:lock:{name}"
        self.ttl_ms = max(100, int(ttl_seconds * 1000))
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        return bool(get_redis().set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> bool:
        return bool(get_redis().eval(_RELEASE, 1, self.key, self.token))

    def renew(self) -> bool:
        """Restart the lock's lifetime; False if it expired meanwhile (someone else may hold it)."""
        return bool(get_redis().eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the lock every third of its lifetime until the block ends, from a thread.

        A thread rather than renewals between steps, because one step (a slow IMAP command,
        a large message) can take longer than the lock lasts.
        """
        stop = threading.Event()
        thread = threading.Thread(target=self._renew_until, args=(stop,), name=f"renew {self.key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_ms / 3000):
            try:
                if not self.renew():
                    logger.warning("Lock %s expired before it was renewed; work goes on (it is idempotent)", self.key)
                    return
            except Exception:
                logger.exception("Could not renew lock %s", self.key)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
