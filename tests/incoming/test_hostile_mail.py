"""The hostile corpus, delivered to a real mailbox and polled: none of it stops the poll."""

from __future__ import annotations

from pathlib import Path

from conversations.incoming.polling import poll_inbox
from conversations.models import Attachment, Message, QuarantinedMessage
from tests.fixtures.hostile.generate import big_cases
from tests.incoming.conftest import threads

HOSTILE = Path(__file__).resolve().parent.parent / "fixtures" / "hostile"


def corpus() -> list[bytes]:
    return [path.read_bytes() for path in sorted(HOSTILE.glob("*.eml"))] + list(big_cases().values())


def test_hostile_mail_is_stored_or_quarantined_and_the_poll_goes_on(db, make_inbox, mail_account, security,
                                                                     media_root):
    inbox = make_inbox(security)
    messages = [m for m in corpus() if m.strip()]  # IMAP cannot APPEND an empty message
    uids = mail_account.append([*messages, *threads(1, replies=0, prefix="After the storm")])
    assert len(messages) >= 30

    result = poll_inbox(inbox.pk)

    assert result.error == ""
    inbox.refresh_from_db()
    assert inbox.last_uid == uids[-1]
    assert Message.objects.filter(inbox=inbox, subject="After the storm 0").exists()
    stored = set(Message.objects.filter(inbox=inbox).values_list("imap_uid", flat=True))
    held = set(QuarantinedMessage.objects.filter(inbox=inbox).values_list("imap_uid", flat=True))
    duplicates = result.duplicates  # the same message saved twice becomes one message
    assert len(stored | held) + duplicates == len(uids)
    assert all(QuarantinedMessage.objects.filter(inbox=inbox).values_list("error", flat=True))
    for attachment in Attachment.objects.filter(message__inbox=inbox):
        assert Path(attachment.file.path).resolve().is_relative_to(media_root.resolve())
    assert poll_inbox(inbox.pk).fetched == 0
