"""Parsing in the helper process: the same result as in place, and nothing lost when it dies."""

from __future__ import annotations

import os
import signal

import pytest

from conversations.incoming.ingest import IncomingEmail, ParsedAhead, ingest_batch
from conversations.models import Message, QuarantinedMessage
from inboxes.mailformat import parse_pool
from inboxes.mailformat.parsing import parse_email
from tests.ingest.conftest import compose, mail
from tests.ingest.test_hostile import corpus

OWN = frozenset({"support@switchboard.test"})


def _fresh_helper() -> None:
    """A helper that works (an earlier test may have killed the last one: the first call then
    finds it dead and the next starts another)."""
    for _attempt in range(2):
        future = parse_pool.submit(compose(), headers_only=False, own_addresses=OWN)
        if future is not None and parse_pool.result(future) is not None:
            return
    raise AssertionError("the parse helper does not start")


def _helper_pid() -> int:
    """The pid of the helper that the next message goes to."""
    helper = parse_pool._current()
    assert helper is not None
    return helper.process.pid


def test_the_helper_parses_every_message_as_the_worker_would(settings):
    settings.INGEST_PARSE_PROCESS = True
    _fresh_helper()
    messages = {**corpus(), "with_attachment": mail("alternative_with_attachment.eml")}
    futures = {name: parse_pool.submit(raw, headers_only=False, own_addresses=OWN)
               for name, raw in messages.items()}

    assert any(future is not None for future in futures.values())
    for name, future in futures.items():
        raw = messages[name]
        if future is None:  # too large to be worth copying: parsed in place
            assert len(raw) > parse_pool.IN_PLACE_BYTES, name
            continue
        remote = parse_pool.result(future)
        try:
            local = parse_email(raw, own_addresses=OWN)
        except Exception:
            assert remote is None, name  # a failed parse is left to the worker, to be quarantined
            continue
        assert remote == local, name


def test_a_batch_whose_helper_is_killed_is_parsed_in_place_and_stored_once(inbox, settings):
    settings.INGEST_PARSE_PROCESS = True
    _fresh_helper()
    os.kill(_helper_pid(), signal.SIGKILL)  # killed between two batches...
    first = [IncomingEmail(compose(message_id=f"k{n}@x", body=f"first {n}"), imap_uid=n) for n in range(1, 4)]
    results = [result for _item, result in ingest_batch(inbox, ParsedAhead(inbox, first))]

    helper = _helper_pid()  # the new helper the first batch made way for
    later = ParsedAhead(inbox, [IncomingEmail(compose(message_id=f"k{n}@x", body=f"second {n}"), imap_uid=n)
                                for n in range(4, 7)])
    os.kill(helper, signal.SIGKILL)  # ...and while a batch is in its hands
    results += [result for _item, result in ingest_batch(inbox, later)]

    assert [r.created for r in results] == [True] * 6
    assert sorted(Message.objects.values_list("text", flat=True)) == [
        "first 1", "first 2", "first 3", "second 4", "second 5", "second 6"]
    assert not QuarantinedMessage.objects.exists()


@pytest.mark.parametrize("enabled", [False, True])
def test_the_setting_decides_where_messages_are_parsed(settings, enabled):
    settings.INGEST_PARSE_PROCESS = enabled
    if enabled:
        _fresh_helper()
    future = parse_pool.submit(compose(), headers_only=False, own_addresses=OWN)
    assert (future is not None) is enabled
    if future is not None:
        assert parse_pool.result(future).subject == "Question"
