"""At most CONNECTION_TESTS_PER_MINUTE tests per inbox and minute, whoever asks (a test logs in to the server)."""

from __future__ import annotations

import time

from django.conf import settings

from config.redis import get_redis


def allow_connection_test(inbox_id: int) -> bool:
    """Count one test for the inbox in this minute; false when the minute's tests are used up."""
    key = f"switchboard:connection-test:{inbox_id}:{int(time.time() // 60)}"
    pipe = get_redis().pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = pipe.execute()
    return int(count) <= settings.CONNECTION_TESTS_PER_MINUTE


REFUSED = "This inbox was tested several times in the last minute; wait a minute and test again."
