"""Polling a real Dovecot: every message once, threads as conversations, the server's flags respected."""

from __future__ import annotations

import datetime as dt
from email.policy import SMTP

import pytest

from conversations.incoming.polling import poll_inbox
from conversations.models import Conversation, Message
from inboxes.models import AfterImport, ConnectionStatus, Security
from tests.incoming.conftest import email, threads


def test_appended_mail_becomes_threaded_conversations_once(db, make_inbox, mail_account, security):
    inbox = make_inbox(security)
    mail_account.append(threads(4, replies=2))

    first = poll_inbox(inbox.pk)
    second = poll_inbox(inbox.pk)

    assert (first.created, first.error) == (12, "")
    assert Message.objects.filter(inbox=inbox).count() == 12
    assert Conversation.objects.filter(inbox=inbox).count() == 4
    assert sorted(c.messages.count() for c in Conversation.objects.filter(inbox=inbox)) == [3, 3, 3, 3]
    assert (second.fetched, second.created) == (0, 0)
    inbox.refresh_from_db()
    assert inbox.connection_status == ConnectionStatus.CONNECTED
    assert inbox.last_uid == 12
    assert inbox.last_successful_poll_at is not None


def test_mail_that_arrives_later_is_picked_up_after_the_cursor(db, make_inbox, mail_account, security):
    inbox = make_inbox(security)
    mail_account.append(threads(1, replies=0, prefix="Early"))
    poll_inbox(inbox.pk)

    mail_account.append(threads(2, replies=0, prefix="Later"))
    result = poll_inbox(inbox.pk)

    assert result.created == 2
    assert set(Message.objects.filter(inbox=inbox).values_list("subject", flat=True)) == {
        "Early 0", "Later 0", "Later 1"}


def test_mail_read_in_another_client_before_the_poll_is_still_imported(db, make_inbox, mail_account, security):
    inbox = make_inbox(security)
    uids = mail_account.append(threads(3, replies=0))
    mail_account.mark_read(uids)

    result = poll_inbox(inbox.pk)

    assert result.created == 3
    assert all(r"\Seen" in flags for flags in mail_account.flags().values())


def test_a_changed_uidvalidity_loses_nothing_and_duplicates_nothing(db, make_inbox, mail_account, security):
    inbox = make_inbox(security)
    mail_account.append(threads(3, replies=1, prefix="Before"))
    poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    old = inbox.uidvalidity

    mail_account.set_uidvalidity(old + 1000)
    mail_account.append(threads(2, replies=0, prefix="After"))
    result = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert inbox.uidvalidity == old + 1000
    assert (result.created, result.duplicates) == (2, 6)
    subjects = list(Message.objects.filter(inbox=inbox).values_list("subject", flat=True))
    assert len(subjects) == len(set(subjects)) == 8


def test_leave_keeps_the_server_flags_as_they_were(db, make_inbox, mail_account, security):
    inbox = make_inbox(security, after_import=AfterImport.LEAVE)
    mail_account.append(threads(2, replies=0))

    poll_inbox(inbox.pk)

    assert Message.objects.filter(inbox=inbox).count() == 2
    assert not any(r"\Seen" in flags for flags in mail_account.flags().values())


def test_mark_read_sets_seen_only_after_import(db, make_inbox, mail_account):
    inbox = make_inbox(Security.STARTTLS, after_import=AfterImport.MARK_READ)
    mail_account.append(threads(2, replies=0))

    poll_inbox(inbox.pk)

    assert Message.objects.filter(inbox=inbox).count() == 2
    assert all(r"\Seen" in flags for flags in mail_account.flags().values())


def test_move_puts_imported_mail_in_the_folder_and_deletes_nothing(db, make_inbox, mail_account):
    inbox = make_inbox(Security.IMPLICIT_TLS, after_import=AfterImport.MOVE, after_import_folder="Done")
    mail_account.append(threads(3, replies=0))

    first = poll_inbox(inbox.pk)
    second = poll_inbox(inbox.pk)

    assert (first.created, first.error, second.fetched) == (3, "", 0)
    assert mail_account.flags("INBOX") == {}
    assert len(mail_account.flags("Done")) == 3


def test_an_oversized_message_is_recorded_once_with_its_headers(db, make_inbox, mail_account, security):
    inbox = make_inbox(security, max_message_bytes=20_000)
    big = email("Huge logs", body="x" * 60_000)
    mail_account.append([bytes(big), *threads(1, replies=0)])

    first = poll_inbox(inbox.pk)
    mail_account.append(threads(1, replies=0, prefix="Next"))
    second = poll_inbox(inbox.pk)

    assert (first.created, first.too_large) == (2, 1)
    assert (second.fetched, second.too_large) == (1, 0)
    message = Message.objects.get(inbox=inbox, subject="Huge logs")
    assert message.too_large
    assert "x" * 1000 not in message.text


def test_the_first_poll_skips_mail_older_than_import_since(db, make_inbox, mail_account, security):
    now = dt.datetime.now(dt.UTC)
    mail_account.append(threads(2, replies=0, prefix="Old"), when=now - dt.timedelta(days=3))
    inbox = make_inbox(security, import_since=now - dt.timedelta(minutes=1))
    mail_account.append(threads(1, replies=0, prefix="New"))

    poll_inbox(inbox.pk)

    assert list(Message.objects.filter(inbox=inbox).values_list("subject", flat=True)) == ["New 0"]


def test_history_import_brings_older_mail_in_archive_mode_with_progress(db, make_inbox, mail_account, security):
    now = dt.datetime.now(dt.UTC)
    mail_account.append(threads(1, replies=0, prefix="Ancient"), when=now - dt.timedelta(days=100))
    mail_account.append(threads(3, replies=1, prefix="Old"), when=now - dt.timedelta(days=10))
    inbox = make_inbox(security, import_since=now - dt.timedelta(minutes=1),
                       history_cutoff=(now - dt.timedelta(days=30)).date(), history_status="pending")
    mail_account.append(threads(1, replies=0, prefix="New"))

    result = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert (inbox.history_status, inbox.history_total, inbox.history_done) == ("done", 6, 6)
    assert result.history_imported == 6
    archived = Message.objects.filter(inbox=inbox, archived=True)
    assert archived.count() == 6
    assert not archived.filter(subject__startswith="New").exists()
    assert Message.objects.filter(inbox=inbox, subject="New 0", archived=False).exists()
    assert not Message.objects.filter(inbox=inbox, subject__startswith="Ancient").exists()
    assert poll_inbox(inbox.pk).fetched == 0


def test_a_backlog_after_an_outage_comes_in_uid_order_over_bounded_polls(db, make_inbox, mail_account, settings):
    settings.POLL_BATCH_SIZE = 3
    settings.POLL_TIME_BUDGET_SECONDS = 0  # each poll stops after its first batch
    inbox = make_inbox(Security.NONE)
    uids = mail_account.append(threads(7, replies=0))

    results = [poll_inbox(inbox.pk) for _ in range(3)]

    assert [r.created for r in results] == [3, 3, 1]
    assert [r.backlog for r in results] == [4, 1, 0]
    stored = list(Message.objects.filter(inbox=inbox).order_by("id").values_list("imap_uid", flat=True))
    assert stored == uids
    inbox.refresh_from_db()
    assert (inbox.backlog, inbox.last_uid) == (0, uids[-1])


@pytest.mark.parametrize("batch_bytes", [32 * 1024 * 1024, 1])
def test_one_poll_over_many_batches_keeps_uid_order_and_threads_across_them(db, make_inbox, mail_account, settings,
                                                                           batch_bytes):
    # Each batch is fetched, and parsed, while the one before it is stored (unless the two would
    # hold more than POLL_BATCH_BYTES: then one message at a time): neither changes the result.
    settings.POLL_BATCH_SIZE = 2
    settings.POLL_BATCH_BYTES = batch_bytes
    inbox = make_inbox(Security.NONE)
    openings = [email(f"Question {n}", sender=f"customer{n}@example.com", body=f"Opening {n}") for n in range(3)]
    replies = [email(f"Re: Question {n}", sender=f"customer{n}@example.com", body=f"Follow-up {n}", reply_to=m)
               for n, m in enumerate(openings)]
    uids = mail_account.append([m.as_bytes(policy=SMTP) for m in openings + replies + [email("Lone")]])

    result = poll_inbox(inbox.pk)

    assert (result.created, result.backlog, result.error) == (7, 0, "")
    stored = Message.objects.filter(inbox=inbox).order_by("id")
    assert list(stored.values_list("imap_uid", flat=True)) == uids
    for n in range(3):
        conversation = Conversation.objects.get(inbox=inbox, subject=f"Question {n}")
        assert [m.text.strip() for m in conversation.messages.order_by("id")] == [f"Opening {n}", f"Follow-up {n}"]
    assert Conversation.objects.filter(inbox=inbox).count() == 4
    inbox.refresh_from_db()
    assert (inbox.last_uid, inbox.backlog) == (uids[-1], 0)
