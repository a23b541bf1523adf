"""Inboxes wired to the session's real Dovecot, over each security mode, and mail to put in them."""

from __future__ import annotations

import datetime as dt
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import pytest

from inboxes.models import Security
from tests import factories
from tests.servers.fake_imap import fake_imap  # noqa: F401 (a fixture for these tests)

MODES = [Security.IMPLICIT_TLS, Security.STARTTLS, Security.NONE]


@pytest.fixture(autouse=True)
def trust_test_ca(dovecot, settings):
    """The transport trusts the CA of the test Dovecot (worker processes get MAIL_CA_FILE)."""
    settings.MAIL_CA_FILE = str(dovecot.ca_file)


@pytest.fixture(params=MODES, ids=[mode.value for mode in MODES])
def security(request) -> Security:
    return request.param


@pytest.fixture
def make_inbox(dovecot, mail_account):
    """An Inbox row that reads `mail_account` over the given security mode."""

    def make(security: Security = Security.IMPLICIT_TLS, **fields):
        values = {
            "imap_host": dovecot.host, "imap_port": dovecot.ports[security], "imap_security": security,
            "imap_username": mail_account.username, "imap_secret": mail_account.password,
            "import_since": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        }
        return factories.InboxFactory(**{**values, **fields})

    return make


def wait_for(read, done, timeout: float = 30.0, interval: float = 0.05):
    """Poll `read()` until `done(value)`; return the value. For logs and other processes' work."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {timeout}s; last value: {value!r}"[:2000])
        time.sleep(interval)
        value = read()
    return value


def worker_env(dovecot, **extra: str) -> dict[str, str]:
    return {"MAIL_CA_FILE": str(dovecot.ca_file), **extra}


def email(subject: str, *, sender: str = "customer@example.com", body: str = "Hello", message_id: str | None = None,
          reply_to: EmailMessage | None = None, date: dt.datetime | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Customer <{sender}>"
    message["To"] = "support@switchboard.test"
    message["Subject"] = subject
    message["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    message["Message-ID"] = message_id or make_msgid(domain="example.com")
    if reply_to is not None:
        message["In-Reply-To"] = reply_to["Message-ID"]
        message["References"] = reply_to["Message-ID"]
    message.set_content(body)
    return message


def threads(count: int, replies: int = 1, *, prefix: str = "Question") -> list[bytes]:
    """`count` conversations, each an opening message and `replies` replies, in arrival order."""
    messages = []
    for n in range(count):
        first = email(f"{prefix} {n}", sender=f"customer{n}@example.com", body=f"Opening message {n}")
        messages.append(first)
        previous = first
        for r in range(replies):
            previous = email(f"Re: {prefix} {n}", sender=f"customer{n}@example.com",
                             body=f"Follow-up {r} to {n}", reply_to=previous)
            messages.append(previous)
    return [m.as_bytes(policy=SMTP) for m in messages]
