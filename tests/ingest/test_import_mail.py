"""import_mail brings an mbox, a Maildir or .eml files in through the same ingest."""

from __future__ import annotations

import mailbox
import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conversations.models import Conversation, Message, QuarantinedMessage
from tests.ingest.conftest import FIXTURES, mail

NAMES = ["plain.eml", "reply.eml", "alternative_with_attachment.eml"]


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_mail", *args, stdout=out)
    return out.getvalue()


def test_import_an_mbox(inbox, tmp_path):
    box = mailbox.mbox(tmp_path / "export.mbox")
    for name in NAMES:
        box.add(mail(name))
    box.flush()

    output = run("--inbox", inbox.address, str(tmp_path / "export.mbox"))

    assert "mbox #1: created 'My order has not arrived'" in output
    assert output.strip().endswith("3 created, 0 duplicates, 0 quarantined.")
    assert Message.objects.count() == 3
    assert Conversation.objects.count() == 2  # the reply joined the first
    assert Message.objects.get(message_id="order-question-1@example.com").raw.read() == mail("plain.eml")


def test_import_a_maildir_twice_creates_nothing_the_second_time(inbox, tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir")
    for name in NAMES:
        box.add(mail(name))

    run("--inbox", inbox.address, str(tmp_path / "Maildir"))
    again = run("--inbox", inbox.address.upper(), str(tmp_path / "Maildir"))

    assert again.strip().endswith("0 created, 3 duplicates, 0 quarantined.")
    assert Message.objects.count() == 3


def test_import_a_folder_of_eml_files_and_a_single_file(inbox, tmp_path, settings):
    folder = tmp_path / "eml"
    shutil.copytree(FIXTURES / "mail", folder)
    settings.MAX_MESSAGE_BYTES = 1000  # the invoice is larger: it goes to the quarantine

    output = run("--inbox", inbox.address, str(folder))
    single = run("--inbox", inbox.address, str(folder / "plain.eml"))

    assert "alternative_with_attachment.eml: quarantined: The message is" in output
    assert output.strip().endswith("2 created, 0 duplicates, 1 quarantined.")
    assert single.strip() == "plain.eml: duplicate of order-question-1@example.com\n" \
        "0 created, 1 duplicates, 0 quarantined."
    assert QuarantinedMessage.objects.count() == 1


def test_import_as_history_archives(inbox, tmp_path):
    (tmp_path / "old.eml").write_bytes(mail("plain.eml"))

    run("--inbox", inbox.address, "--archive", str(tmp_path / "old.eml"))

    assert Message.objects.get().archived


def test_an_unknown_inbox_is_refused(db, tmp_path):
    with pytest.raises(CommandError, match=r"No inbox with the address nobody@switchboard\.test"):
        run("--inbox", "nobody@switchboard.test", str(tmp_path))
