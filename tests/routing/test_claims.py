"""Two processes freeing capacity at the same moment: each conversation is assigned once, and no
agent passes capacity. Real threads, each with its own database connection, run many times."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from conversations import actions
from conversations.models import Conversation, ConversationActivity, ConversationStatus
from conversations.routing import queue
from tests.routing.conftest import online_agent, waiting_conversation

RUNS = 20


def _at_once(*jobs) -> list[BaseException]:
    barrier, errors = threading.Barrier(len(jobs)), []

    def run(job) -> None:
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as error:  # reported by the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.mark.django_db(transaction=True)
def test_two_processes_freeing_capacity_at_once_assign_each_conversation_once(inbox):
    department = inbox.department
    ann, ben = online_agent(department, "ann", capacity=1), online_agent(department, "ben", capacity=1)
    for run in range(RUNS):
        held = [actions.assign(waiting_conversation(inbox), agent, by=None) for agent in (ann, ben)]
        waiting = [waiting_conversation(inbox) for _ in range(3)]

        def free(conversation: Conversation) -> None:
            actions.close(conversation, by=None)
            queue.drain(department.pk)  # what each process's drain task runs

        first, second = held
        errors = _at_once(lambda: free(first), lambda: free(second))  # noqa: B023 (joined before the loop goes on)
        assert errors == [], f"run {run}: {errors}"

        open_loads = Counter(Conversation.objects.filter(status=ConversationStatus.OPEN, assignee__isnull=False)
                             .values_list("assignee__name", flat=True))
        assert open_loads == {"Ann": 1, "Ben": 1}, f"run {run}"
        assigned = [c for c in waiting if Conversation.objects.get(pk=c.pk).assignee_id is not None]
        assert len(assigned) == 2, f"run {run}"
        for conversation in assigned:
            assert ConversationActivity.objects.filter(conversation=conversation, verb="assigned").count() == 1
        # Clear the board for the next run.
        for conversation in Conversation.objects.filter(status=ConversationStatus.OPEN):
            actions.close(conversation, by=None)
