"""A server that announces or streams more than an inbox accepts: a clear error, memory flat."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conversations.incoming.polling import poll_inbox
from conversations.models import Message
from inboxes.models import ConnectionStatus, Security
from tests import factories
from tests.incoming.conftest import threads
from tests.servers.fake_imap import stream_line, stream_literal, stream_untagged

MB = 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """The most this process's resident memory grew while the block ran, sampled every 5 ms."""
    before, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes() - before)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], rss_bytes() - before)


def fake_inbox(server, **fields):
    return factories.InboxFactory(
        imap_host=server.host, imap_port=server.port, imap_security=Security.NONE, imap_username="user",
        imap_secret="secret", import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), **fields)


HOSTILE = {
    "a 2 GB literal": (stream_literal(2_147_483_647), "announced a single item of 2,147,483,647 bytes"),
    "a line without end": (stream_line(), "sent a line of more than 1,000,000 bytes without a line end"),
    "answers without end": (stream_untagged(), "sent more than 100,000 lines in answer to one command"),
}


@pytest.mark.parametrize(("answer", "words"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_server_sending_too_much_gets_a_clear_error_and_memory_stays_flat(db, fake_imap, answer, words):
    server = fake_imap(messages=threads(1, replies=0), answers={"FETCH BODY": answer})
    inbox = fake_inbox(server)

    with peak_rss_growth() as growth:
        result = poll_inbox(inbox.pk)

    assert growth[0] < 50 * MB, f"memory grew by {growth[0] / MB:.0f} MB"
    inbox.refresh_from_db()
    assert "FETCH BODY" in server.commands, "the poll never got to the hostile answer"
    assert words in result.error
    assert inbox.last_error.startswith("Could not fetch messages: The server " + words)
    assert "closed the connection" in inbox.last_error
    assert inbox.connection_status == ConnectionStatus.ERROR
    assert (inbox.last_uid, Message.objects.filter(inbox=inbox).count()) == (0, 0)


def test_a_literal_over_the_inbox_limit_is_refused_before_it_is_read(db, fake_imap):
    # The server claims the message is small, then sends 3 MB for it: over 1 MB + 1 MB headroom.
    server = fake_imap(messages=threads(1, replies=0),
                       answers={"FETCH BODY": stream_literal(3 * MB, send_at_most=3 * MB)})
    inbox = fake_inbox(server, max_message_bytes=MB)

    result = poll_inbox(inbox.pk)

    refused = f"announced a single item of {3 * MB:,} bytes, more than this inbox accepts ({2 * MB:,} bytes"
    assert refused in result.error


def test_mail_within_the_limits_is_imported_from_the_same_server(db, fake_imap):
    server = fake_imap(messages=threads(2, replies=1))
    inbox = fake_inbox(server, max_message_bytes=MB)

    result = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert (result.error, result.created, inbox.last_uid) == ("", 4, 4)
    assert inbox.connection_status == ConnectionStatus.CONNECTED
