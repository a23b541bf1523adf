"""Real Celery workers: killed in the middle of a poll, or polling one inbox together."""

from __future__ import annotations

import pytest
from django.db.models import Count

from conversations.models import Conversation, Message
from conversations.tasks.polling import poll_due_inboxes, poll_inbox
from inboxes.models import Inbox
from tests.incoming.conftest import threads, wait_for, worker_env

# One message per round trip, so that a poll of many messages lasts long enough to be hit;
# a short lock so that the poll after the crash need not wait out a production-sized expiry.
SLOW_POLL = {"POLL_BATCH_SIZE": "1", "POLL_LOCK_SECONDS": "4"}


def stored(inbox) -> int:
    return Message.objects.filter(inbox=inbox).count()


def assert_each_message_once(inbox, expected: int) -> None:
    assert stored(inbox) == expected
    duplicated = (Message.objects.filter(inbox=inbox).values("header_message_id")
                  .annotate(n=Count("id")).filter(n__gt=1))
    assert list(duplicated) == []


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_poll_loses_and_duplicates_nothing(
        celery_worker_factory, make_inbox, mail_account, dovecot, security):
    inbox = make_inbox(security)
    mail_account.append(threads(40, replies=1))  # 80 messages
    doomed = celery_worker_factory(name=f"doomed-{security}", **worker_env(dovecot, **SLOW_POLL))

    poll_inbox.delay(inbox.pk)
    wait_for(lambda: stored(inbox), lambda n: n >= 3)
    doomed.kill()
    at_kill = stored(inbox)
    assert at_kill < 80, "the poll finished before the kill: nothing was tested"

    celery_worker_factory(name=f"survivor-{security}", **worker_env(dovecot, **SLOW_POLL))

    def poll_again() -> int:
        poll_inbox.delay(inbox.pk)  # as beat would; skipped while the dead worker's lock lasts
        return stored(inbox)

    wait_for(poll_again, lambda n: n >= 80, timeout=120, interval=1.0)
    wait_for(lambda: poll_inbox.delay(inbox.pk).get(timeout=60), lambda r: not r["skipped"], timeout=60)
    assert_each_message_once(inbox, 80)
    assert Conversation.objects.filter(inbox=inbox).count() == 40
    inbox.refresh_from_db()
    assert inbox.last_uid == 80


@pytest.mark.django_db(transaction=True)
def test_two_workers_polling_one_inbox_store_each_message_once(
        celery_worker_factory, make_inbox, mail_account, dovecot, security):
    inbox = make_inbox(security)
    mail_account.append(threads(20, replies=1))  # 40 messages
    for name in ("left", "right"):
        celery_worker_factory(name=f"{name}-{security}", **worker_env(dovecot, POLL_BATCH_SIZE="1"))

    results = [poll_inbox.delay(inbox.pk) for _ in range(6)]
    outcomes = [result.get(timeout=120) for result in results]

    assert_each_message_once(inbox, 40)
    assert sum(outcome["created"] for outcome in outcomes) == 40
    assert any(outcome["skipped"] for outcome in outcomes), "the polls never overlapped"


@pytest.mark.django_db(transaction=True)
def test_beat_task_enqueues_due_inboxes_once(celery_worker_factory, make_inbox, mail_account, dovecot):
    inbox = make_inbox()
    mail_account.append(threads(2, replies=0))
    celery_worker_factory(name="beat-target", **worker_env(dovecot))

    assert poll_due_inboxes.delay().get(timeout=60) == 1
    assert poll_due_inboxes() == 0  # already queued or just polled: not enqueued again

    wait_for(lambda: stored(inbox), lambda n: n == 2)
    # The poll records its success after the messages' own transactions have committed.
    polled = wait_for(lambda: Inbox.objects.get(pk=inbox.pk).last_successful_poll_at, lambda at: at is not None)
    assert polled is not None
