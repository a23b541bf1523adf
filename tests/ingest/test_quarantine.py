"""Poison mail goes to the quarantine, raw and with a reason; managers retry, discard, download."""

from __future__ import annotations

import pytest
from django.urls import reverse

from conversations.incoming.ingest import discard_quarantined, ingest_email, retry_quarantined
from conversations.models import Message, QuarantinedMessage, QuarantineStatus
from tests import factories
from tests.ingest.conftest import mail


@pytest.fixture
def oversized(inbox, settings):
    """A message over a lowered size limit: quarantined by ingest, raw kept."""
    settings.MAX_MESSAGE_BYTES = 1000
    raw = mail("alternative_with_attachment.eml")
    result = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=3, imap_uid=42)
    return raw, result


def test_a_message_that_cannot_be_read_is_quarantined_with_its_raw_bytes(inbox, oversized):
    raw, result = oversized

    row = result.quarantined
    assert result.message is None
    assert row.error.startswith(f"The message is {len(raw):,} bytes, over the limit of 1,000 bytes; it was kept")
    assert "MessageTooLarge" in row.details
    assert row.raw.read() == raw
    assert (row.imap_folder, row.imap_uidvalidity, row.imap_uid) == ("INBOX", 3, 42)
    assert row.raw_size == len(raw)
    assert Message.objects.count() == 0


def test_quarantine_is_idempotent_per_uid(inbox, oversized):
    raw, first = oversized

    again = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=3, imap_uid=42)
    other_uid = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=3, imap_uid=43)

    assert again.quarantined == first.quarantined
    assert other_uid.quarantined != first.quarantined
    assert QuarantinedMessage.objects.count() == 2


def test_quarantine_without_uid_is_idempotent_per_content(inbox, oversized):
    raw, _ = oversized

    first = ingest_email(inbox, raw)
    again = ingest_email(inbox, raw)

    assert again.quarantined == first.quarantined


def test_retry_after_the_fix_imports_the_message(inbox, oversized, settings):
    _, result = oversized
    settings.MAX_MESSAGE_BYTES = 50 * 1_048_576

    retried = retry_quarantined(result.quarantined.pk)

    row = QuarantinedMessage.objects.get()
    assert retried.created
    assert row.status == QuarantineStatus.RETRIED
    assert row.message == retried.message
    assert row.resolved_at is not None
    assert retried.message.imap_uid == 42
    assert retried.message.attachments.count() == 2


def test_retry_that_fails_again_keeps_it_held_with_the_new_error(inbox, oversized):
    _, result = oversized

    retried = retry_quarantined(result.quarantined.pk)

    row = QuarantinedMessage.objects.get()
    assert retried.quarantined == row
    assert row.status == QuarantineStatus.HELD
    assert "over the limit" in row.error


def test_discard_marks_it_and_keeps_the_raw_file(inbox, oversized):
    raw, result = oversized

    discard_quarantined(result.quarantined.pk)

    row = QuarantinedMessage.objects.get()
    assert row.status == QuarantineStatus.DISCARDED
    assert row.raw.read() == raw


def test_manager_retries_and_discards_from_the_admin(client, people, inbox, oversized, settings):
    raw, result = oversized
    kept = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=3, imap_uid=43).quarantined
    settings.MAX_MESSAGE_BYTES = 50 * 1_048_576
    client.force_login(people.manager)
    url = reverse("admin:conversations_quarantinedmessage_changelist")

    retry = client.post(url, {"action": "retry", "_selected_action": [result.quarantined.pk]}, follow=True)
    discard = client.post(url, {"action": "discard", "_selected_action": [kept.pk]}, follow=True)

    assert "1 imported, 0 still failing." in retry.content.decode()
    assert "1 discarded." in discard.content.decode()
    statuses = dict(QuarantinedMessage.objects.values_list("pk", "status"))
    assert statuses == {result.quarantined.pk: QuarantineStatus.RETRIED, kept.pk: QuarantineStatus.DISCARDED}
    assert Message.objects.count() == 1


def test_manager_downloads_the_raw_message(client, people, oversized):
    raw, result = oversized
    client.force_login(people.manager)

    download_url = reverse("admin:conversations_quarantinedmessage_raw", args=[result.quarantined.pk])

    listing = client.get(reverse("admin:conversations_quarantinedmessage_changelist"))
    response = client.get(download_url)

    assert download_url in listing.content.decode()
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Type"] == "application/octet-stream"
    assert b"".join(response.streaming_content) == raw


def test_an_agent_who_is_not_staff_cannot_download(client, people, oversized):
    _, result = oversized
    client.force_login(people.agent_a.user)

    response = client.get(reverse("admin:conversations_quarantinedmessage_raw", args=[result.quarantined.pk]))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_a_quarantined_message_is_listed_for_managers(client, people):
    row = factories.QuarantinedMessageFactory(error="Could not parse: broken boundary")
    client.force_login(people.manager)

    response = client.get(reverse("admin:conversations_quarantinedmessage_changelist"))

    assert "Could not parse: broken boundary" in response.content.decode()
    assert row.inbox.address in response.content.decode()


def test_manager_reads_the_error_and_the_traceback_on_the_change_page(client, people, oversized):
    _, result = oversized
    client.force_login(people.manager)

    page = client.get(reverse("admin:conversations_quarantinedmessage_change", args=[result.quarantined.pk]))

    content = page.content.decode()
    assert page.status_code == 200
    assert "over the limit of 1,000 bytes" in content
    assert "MessageTooLarge" in content
    assert reverse("admin:conversations_quarantinedmessage_raw", args=[result.quarantined.pk]) in content
