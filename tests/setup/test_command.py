"""python manage.py test_inbox ADDRESS."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command


def test_it_reports_every_step_and_passes(setup_inbox):
    out = StringIO()
    call_command("test_inbox", setup_inbox.address.upper(), stdout=out)
    text = out.getvalue()
    assert "IMAP: login" in text
    assert "SMTP: login" in text
    assert "FAIL" not in text
    assert "Every step passed." in text
    assert setup_inbox.imap_secret not in text


def test_a_failing_step_says_what_to_do_and_exits_non_zero(setup_inbox):
    setup_inbox.imap_folder = "Nope"
    setup_inbox.save()
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("test_inbox", setup_inbox.address, stdout=out)
    assert raised.value.returncode == 1
    assert "FAIL IMAP: folder" in out.getvalue()
    assert "What to do: Pick one of this account's folders: INBOX" in out.getvalue()


def test_an_unknown_address_is_a_clear_error(db):
    with pytest.raises(CommandError, match=r"No inbox has the address nobody@example\.com"):
        call_command("test_inbox", "nobody@example.com")
