"""The per-inbox poll lock: kept while a long poll runs, gone soon after a worker is killed."""

from __future__ import annotations

import threading
import time

import pytest

from conversations.incoming.polling import poll_inbox
from conversations.models import Message
from conversations.tasks import polling as tasks
from core.locks import RedisLock
from inboxes.models import Security
from tests.incoming.conftest import threads, wait_for, worker_env
from tests.incoming.test_workers import assert_each_message_once


def stored(inbox) -> int:
    return Message.objects.filter(inbox=inbox).count()


def test_a_poll_longer_than_its_lock_keeps_the_lock_until_it_ends(db, make_inbox, mail_account, settings):
    # Renewed every 0.27 s: short enough to be tested many times over, long enough that a
    # busy machine's scheduling does not starve the renewing thread past it.
    settings.POLL_LOCK_SECONDS = 0.8
    settings.POLL_BATCH_SIZE = 1  # one round trip per message: a poll of several seconds
    inbox = make_inbox(Security.NONE)
    # 900 messages: a quiet machine polls about 220 a second at one per round trip, so the
    # poll outlasts the lock several times over however fast the machine is.
    mail_account.append(threads(450, replies=1))
    name = f"poll-inbox:{inbox.pk}"
    taken_by_another: list[float] = []
    done = threading.Event()

    def another_worker() -> None:
        while not done.wait(0.05):
            rival = RedisLock(name, 60)
            if rival.acquire():
                taken_by_another.append(time.monotonic())
                rival.release()

    rival_thread = threading.Thread(target=another_worker, daemon=True)
    rival_thread.start()
    started = time.monotonic()
    result = poll_inbox(inbox.pk)
    lasted = time.monotonic() - started
    done.set()
    rival_thread.join()

    assert result.created == 900
    assert lasted > 2 * settings.POLL_LOCK_SECONDS, f"the poll took only {lasted:.1f}s: nothing was tested"
    assert taken_by_another == [], "another poller got the lock while the poll ran"
    after = RedisLock(name, 1)
    assert after.acquire(), "the lock was not released after the poll"
    after.release()


@pytest.mark.django_db(transaction=True)
def test_after_a_worker_is_killed_mid_poll_the_inbox_polls_again_within_the_lock_length(
        celery_worker_factory, make_inbox, mail_account, dovecot, settings):
    inbox = make_inbox(Security.NONE)
    mail_account.append(threads(40, replies=1))  # 80 messages
    doomed = celery_worker_factory(name="lock-doomed", **worker_env(
        dovecot, POLL_BATCH_SIZE="1", POLL_LOCK_SECONDS="3"))

    tasks.poll_inbox.delay(inbox.pk)
    wait_for(lambda: stored(inbox), lambda n: n >= 3)
    doomed.kill()
    killed_at = time.monotonic()
    assert stored(inbox) < 80, "the poll finished before the kill: nothing was tested"

    assert poll_inbox(inbox.pk).skipped, "the killed worker's lock was already gone"
    result = wait_for(lambda: poll_inbox(inbox.pk), lambda r: not r.skipped, timeout=30, interval=0.2)
    waited = time.monotonic() - killed_at

    assert waited < 3 + 1.5, f"the inbox stayed locked {waited:.1f}s after the kill"
    assert result.error == ""
    assert_each_message_once(inbox, 80)
