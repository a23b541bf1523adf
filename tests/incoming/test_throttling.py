"""A server that says we are over its limits: Throttled, not a wrong password; minutes of backoff."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from conversations.incoming.polling import backoff_seconds, list_due_inboxes, poll_inbox
from conversations.models import Message
from inboxes.imap_errors import is_throttling
from inboxes.models import ConnectionStatus, Inbox, Security
from tests import factories
from tests.incoming.conftest import threads
from tests.servers.fake_imap import bye

GMAIL_LOGIN = b"{tag} NO [ALERT] Account exceeded command or bandwidth limits. (Failure)\r\n"


def fake_inbox(server, **fields) -> Inbox:
    return factories.InboxFactory(
        imap_host=server.host, imap_port=server.port, imap_security=Security.NONE, imap_username="user",
        imap_secret="secret", import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), **fields)


def seconds_until_next_poll(inbox: Inbox) -> float:
    inbox.refresh_from_db()
    return (inbox.next_poll_at - timezone.now()).total_seconds()


@pytest.mark.parametrize(("words", "throttling"), [
    ("[ALERT] Account exceeded command or bandwidth limits. (Failure)", True),
    ("[THROTTLED] Request is throttled. Suggested Backoff Time: 92415 milliseconds", True),
    ("[LIMIT] UID FETCH Rate limit hit.", True),
    ("[ALERT] Too many simultaneous connections. (Failure)", True),
    ("[UNAVAILABLE] Server overloaded, try again later", True),
    ("[AUTHENTICATIONFAILED] Invalid credentials (Failure)", False),
    ("[ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754", False),
    ("[OVERQUOTA] Quota exceeded", False),
    ("[UNAVAILABLE] Temporary authentication failure", False),
    ("Authentication failed.", False),
])
def test_throttling_is_told_apart_from_other_refusals(words, throttling):
    assert is_throttling(words) is throttling


def test_the_throttling_answer_at_login_shows_as_throttled_not_as_a_wrong_password(db, fake_imap, make_inbox,
                                                                                    mail_account):
    server = fake_imap(messages=threads(1, replies=0), answers={"LOGIN": GMAIL_LOGIN})
    throttled = fake_inbox(server, poll_interval=60)
    neighbour = make_inbox(Security.NONE, address="neighbour@switchboard.test")
    mail_account.append(threads(1, replies=0))

    result = poll_inbox(throttled.pk)
    assert poll_inbox(neighbour.pk).created == 1

    throttled.refresh_from_db()
    assert throttled.connection_status == ConnectionStatus.THROTTLED
    assert "Account exceeded command or bandwidth limits" in throttled.last_error
    assert "The server is limiting this account" in throttled.last_error
    assert "Check the username and password" not in result.error
    assert "refused the login" not in throttled.last_error
    assert 120 <= seconds_until_next_poll(throttled) <= 151  # minutes, though it polls every minute
    assert re.search(r"Next try in about [23] minutes\.$", throttled.last_error)
    assert throttled.pk not in list_due_inboxes()

    neighbour.refresh_from_db()
    assert (neighbour.connection_status, neighbour.next_poll_at) == (ConnectionStatus.CONNECTED, None)
    assert neighbour.pk in list_due_inboxes(timezone.now() + dt.timedelta(seconds=61))

    poll_inbox(throttled.pk)
    assert 240 <= seconds_until_next_poll(throttled) <= 301

    del server.answers["LOGIN"]  # the server's limits reset
    assert poll_inbox(throttled.pk).created == 1
    throttled.refresh_from_db()
    assert (throttled.connection_status, throttled.last_error, throttled.consecutive_failures) == (
        ConnectionStatus.CONNECTED, "", 0)


THROTTLING_ANSWERS = {
    "BYE alert at SELECT": ("SELECT", bye(b"[ALERT] Too many simultaneous connections. (Failure)")),
    "THROTTLED at FETCH": (
        "FETCH BODY", b"{tag} NO [THROTTLED] Request is throttled. Suggested Backoff Time: 92415 milliseconds\r\n"),
    "LIMIT at SEARCH": ("SEARCH", b"{tag} NO [LIMIT] UID SEARCH Rate limit hit.\r\n"),
    "UNAVAILABLE at LOGIN": ("LOGIN", b"{tag} NO [UNAVAILABLE] Server overloaded, try again later\r\n"),
}


@pytest.mark.parametrize(("command", "answer"), THROTTLING_ANSWERS.values(), ids=THROTTLING_ANSWERS.keys())
def test_throttling_at_any_step_backs_off_for_minutes(db, fake_imap, command, answer):
    server = fake_imap(messages=threads(1, replies=0), answers={command: answer})
    inbox = fake_inbox(server, poll_interval=30)

    result = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert command in server.commands
    assert inbox.connection_status == ConnectionStatus.THROTTLED
    assert "The server is limiting this account" in result.error
    assert 120 <= seconds_until_next_poll(inbox) <= 151
    assert Message.objects.filter(inbox=inbox).count() == 0


def test_an_unavailable_login_backend_is_not_a_wrong_password(db, fake_imap):
    server = fake_imap(answers={"LOGIN": b"{tag} NO [UNAVAILABLE] Temporary authentication failure\r\n"})
    inbox = fake_inbox(server)
    inbox.mark_connected()

    poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert inbox.connection_status == ConnectionStatus.CONNECTED  # passing: not shown as broken
    assert "could not check the login just now" in inbox.last_error


@pytest.mark.parametrize("interval", [10, 60, 300, 900])
def test_backoff_never_comes_sooner_than_the_poll_interval(interval, settings):
    for failures in range(1, 12):
        for throttled in (False, True):
            delay = backoff_seconds(interval, failures, throttled=throttled)
            assert delay >= interval
            assert delay <= 1.25 * max(interval, settings.POLL_BACKOFF_MAX_SECONDS)


def test_throttled_backoff_doubles_from_two_minutes_to_an_hour():
    delays = [backoff_seconds(60, failures, throttled=True) for failures in range(1, 9)]
    for delay, minutes in zip(delays, [2, 4, 8, 16, 32, 60, 60, 60], strict=True):
        assert minutes * 60 <= delay <= minutes * 75
