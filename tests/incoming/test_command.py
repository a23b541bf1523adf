"""`manage.py poll_inboxes --once` polls in the foreground and says what it did."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conversations.models import Message
from inboxes.models import Security
from tests.incoming.conftest import threads


def test_poll_inboxes_once_prints_what_each_poll_did(db, make_inbox, mail_account):
    inbox = make_inbox(Security.STARTTLS)
    mail_account.append(threads(2, replies=1))
    out = StringIO()

    call_command("poll_inboxes", "--inbox", inbox.address, "--once", stdout=out)
    call_command("poll_inboxes", "--inbox", inbox.address.upper(), "--once", stdout=out)

    first, second = out.getvalue().splitlines()
    assert f"{inbox.address}: fetched 4, new 4" in first
    assert "fetched 0, new 0" in second
    assert Message.objects.filter(inbox=inbox).count() == 4


def test_poll_inboxes_names_an_unknown_inbox(db):
    with pytest.raises(CommandError, match=r"No active inbox with the address nobody@example\.com"):
        call_command("poll_inboxes", "--inbox", "nobody@example.com", "--once")
