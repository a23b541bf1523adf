"""ingest_email stores each message once, threads it and keeps what the customer sent."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conversations.incoming.ingest import ingest_email
from conversations.models import Attachment, Contact, Conversation, Message
from tests.ingest.conftest import mail


def test_a_message_becomes_a_conversation(inbox, media_root):
    result = ingest_email(inbox, mail("plain.eml"), imap_folder="INBOX", imap_uidvalidity=7, imap_uid=1)

    assert result.created
    assert result.conversation_created
    assert result.quarantined is None
    message = Message.objects.get()
    assert message.subject == "My order has not arrived"
    assert "order 10452" in message.text
    assert message.from_address == "ada@example.com"
    assert message.message_id == "order-question-1@example.com"
    assert (message.imap_folder, message.imap_uidvalidity, message.imap_uid) == ("INBOX", 7, 1)
    assert message.raw.read() == mail("plain.eml")
    assert message.conversation.contact.address == "ada@example.com"
    assert message.conversation.department == inbox.department


def test_the_same_message_twice_is_stored_once(inbox):
    first = ingest_email(inbox, mail("plain.eml"), imap_uid=1)
    second = ingest_email(inbox, mail("plain.eml"), imap_uid=2)

    assert second.created is False
    assert second.message == first.message
    assert Message.objects.count() == 1


def test_a_reply_joins_the_conversation(inbox):
    first = ingest_email(inbox, mail("plain.eml"))
    reply = ingest_email(inbox, mail("reply.eml"))

    assert reply.conversation_created is False
    assert reply.message.conversation == first.message.conversation
    assert Conversation.objects.count() == 1
    assert Contact.objects.count() == 1


def test_attachments_and_inline_images_are_kept(inbox, media_root):
    result = ingest_email(inbox, mail("alternative_with_attachment.eml"))

    message = result.message
    assert message.subject == "Factura de febrero \u2013 ¿podéis ayudarme?"
    assert message.from_name == "José Díaz"
    assert message.cc == [{"name": "Doe, Jane", "address": "jane.doe@example.org"}]
    assert "El logo está abajo." in message.text
    assert 'src="cid:logo@example.org"' in message.html
    files = {a.filename: a for a in Attachment.objects.filter(message=message)}
    assert set(files) == {"", "factura febrero.pdf"}
    assert files[""].inline
    assert files[""].content_id == "logo@example.org"
    assert files["factura febrero.pdf"].file.read().startswith(b"%PDF-1.4")
    for attachment in files.values():
        assert Path(attachment.file.path).resolve().is_relative_to(media_root)


def test_each_stored_file_carries_the_sha256_of_its_bytes(inbox):
    raw = mail("alternative_with_attachment.eml")
    message = ingest_email(inbox, raw).message

    message.refresh_from_db()
    assert message.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert message.raw_sha256 == hashlib.sha256(message.raw.read()).hexdigest()
    attachments = list(Attachment.objects.filter(message=message))
    assert len(attachments) == 2
    for attachment in attachments:
        with attachment.file.open("rb") as handle:
            content = handle.read()
        assert attachment.sha256 == hashlib.sha256(content).hexdigest()
        assert attachment.size == len(content)
