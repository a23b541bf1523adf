"""Exactly once: the same message is one message, however it arrives and however many ingest it."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from conversations.incoming.ingest import IncomingEmail, ingest_batch, ingest_email
from conversations.models import Contact, Direction, Message
from tests import factories
from tests.ingest.conftest import compose, mail


def test_a_message_without_message_id_gets_a_stable_synthetic_one(inbox):
    first = ingest_email(inbox, compose(message_id=None))
    again = ingest_email(inbox, compose(message_id=None))

    assert first.message.message_id_synthetic
    assert first.message.message_id.endswith("@synthetic.switchboard.invalid")
    assert first.message.header_message_id == ""
    assert again.created is False
    assert again.message == first.message


ALERT = (b"Received: from monitor.example.com by mx.example.com; Mon, 3 Feb 2025 09:00:00 +0000\r\n"
         b"From: monitor@example.com\r\nTo: support@switchboard.test\r\nSubject: ALERT disk full on db1\r\n"
         b"\r\nDisk / on db1 is 98% full.\r\n")


def test_two_alerts_without_message_id_or_date_that_differ_in_received_are_both_kept(inbox):
    later = ALERT.replace(b"09:00:00", b"09:05:00")

    first = ingest_email(inbox, ALERT, imap_uid=1)
    second = ingest_email(inbox, later, imap_uid=2)
    again = ingest_email(inbox, later, imap_uid=2)

    assert first.created
    assert second.created
    assert second.message != first.message
    assert again.created is False
    assert again.message == second.message
    assert Message.objects.count() == 2


def test_a_message_without_message_id_stored_under_its_content_key_is_still_found(inbox):
    first = ingest_email(inbox, ALERT).message
    # As ingest keyed such messages before the key was the raw bytes' hash.
    Message.objects.filter(pk=first.pk).update(message_id=f"{first.content_hash}@synthetic.switchboard.invalid")

    again = ingest_email(inbox, ALERT)
    other = ingest_email(inbox, ALERT.replace(b"09:00:00", b"09:05:00"))

    assert again.created is False
    assert again.message == first
    assert other.created


def test_a_uid_skipped_as_a_duplicate_is_recorded_on_the_message_it_duplicates(inbox):
    raw = mail("plain.eml")
    stored = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=7, imap_uid=1).message

    ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=7, imap_uid=1)  # the same UID again
    ingest_email(inbox, b"Received: from mx2\r\n" + raw, imap_folder="INBOX", imap_uidvalidity=7, imap_uid=5)
    ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=7, imap_uid=5)

    stored.refresh_from_db()
    assert stored.duplicate_deliveries == [{"folder": "INBOX", "uidvalidity": 7, "uid": 5}]


def test_a_copy_with_other_trace_headers_is_the_same_message(inbox):
    raw = mail("plain.eml")
    copy = b"Received: from backup-mx by imap; Tue, 4 Feb 2025\r\nX-Folder: Archive\r\n" + raw.replace(
        b"Delivered-To: support@switchboard.test", b"Delivered-To: everyone@switchboard.test"
    )

    ingest_email(inbox, raw)
    result = ingest_email(inbox, copy)

    assert result.created is False
    assert Message.objects.count() == 1


def test_the_same_message_id_in_two_inboxes_is_two_messages(inbox):
    ingest_email(inbox, mail("plain.eml"))
    other = ingest_email(factories.InboxFactory(), mail("plain.eml"))

    assert other.created
    assert Message.objects.count() == 2
    assert Contact.objects.count() == 1


def test_our_own_sent_message_coming_back_is_not_stored_again(inbox):
    sent = factories.MessageFactory(
        conversation__inbox=inbox, direction=Direction.OUT, message_id="our-reply@switchboard.test"
    )
    copy = compose(sender="support@switchboard.test", message_id="our-reply@switchboard.test")

    result = ingest_email(inbox, copy)

    assert result.created is False
    assert result.message == sent


def test_mail_from_our_own_inbox_is_flagged_automatic(inbox):
    result = ingest_email(inbox, compose(sender="Support@Switchboard.test", message_id="loop@x"))

    assert result.message.is_automatic
    assert "our own inbox" in result.message.automatic_reason


def test_contacts_are_found_by_address_whatever_the_case_or_name(inbox):
    ingest_email(inbox, compose(sender="Ada <ada@example.com>", message_id="1@x"))
    ingest_email(inbox, compose(sender="Somebody Else <ADA@Example.COM>", message_id="2@x"))

    contact = Contact.objects.get()
    assert contact.address == "ada@example.com"
    assert contact.name == "Ada"


def test_a_message_too_large_to_download_is_recorded_from_its_headers(inbox, settings):
    settings.MAX_MESSAGE_BYTES = 10 * 1_048_576
    headers = mail("alternative_with_attachment.eml").split(b"\n\n", 1)[0] + b"\n\n"

    result = ingest_email(inbox, headers, imap_uid=9, too_large=True, size=31_457_280)
    again = ingest_email(inbox, headers, imap_uid=9, too_large=True, size=31_457_280)

    message = result.message
    assert message.too_large
    assert message.text.startswith("This message is 30.0 MB, over the limit of 10.0 MB; it was not downloaded.")
    assert message.raw_size == 31_457_280
    assert message.attachments.count() == 0
    assert message.from_address == "jose.diaz@example.org"
    assert again.created is False


def test_a_broken_database_is_not_mistaken_for_a_bad_message(inbox):
    """Infrastructure errors propagate, so the poller does not move its cursor past the message."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE conversations_message RENAME TO conversations_message_away")

    with pytest.raises(Exception, match="conversations_message") as raised:
        ingest_email(inbox, mail("plain.eml"), imap_uid=1)

    assert type(raised.value).__name__ in {"OperationalError", "ProgrammingError"}
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE conversations_message_away RENAME TO conversations_message")
        cursor.execute("SELECT COUNT(*) FROM conversations_quarantinedmessage")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_two_processes_ingesting_one_message_at_once_store_it_once():
    inbox = factories.InboxFactory()
    raws = [mail("plain.eml"), b"Received: from mx2\r\n" + mail("plain.eml")]
    barrier = threading.Barrier(len(raws))
    results = []

    def ingest(raw: bytes) -> None:
        try:
            barrier.wait()
            results.append(ingest_email(inbox, raw))
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest, args=(raw,)) for raw in raws]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.created for r in results) == [False, True]
    assert all(r.quarantined is None for r in results)
    assert Message.objects.count() == 1
    assert Contact.objects.count() == 1


def test_a_duplicate_uid_within_one_batch_is_recorded_too(inbox):
    raw = mail("plain.eml")
    items = [IncomingEmail(raw, "INBOX", 7, 1), IncomingEmail(b"Received: from mx2\r\n" + raw, "INBOX", 7, 2),
             IncomingEmail(raw, "Archive", 3, 9)]

    results = [result for _item, result in ingest_batch(inbox, items)]

    assert [r.created for r in results] == [True, False, False]
    stored = Message.objects.get()
    assert stored.duplicate_deliveries == [{"folder": "INBOX", "uidvalidity": 7, "uid": 2},
                                           {"folder": "Archive", "uidvalidity": 3, "uid": 9}]
