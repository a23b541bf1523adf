"""Queue an outgoing reply (or store an internal note): everything about the email is fixed here.

The Message-ID, threading headers, subject, sender, recipients and bodies are decided once, at
queue time, so a retry or a deliberate resend sends the same email, and what the agent sees
in the console is what the customer gets.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nh3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from agents.models import Agent
from conversations.enqueue import deliver_on_commit
from conversations.live.events import MESSAGE_CREATED, publish
from conversations.models import (
    Attachment,
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
    Priority,
)
from conversations.tokens import make_message_id
from inboxes.mailformat.headers import has_control_characters, header_safe, message_ids, reply_subject

logger = logging.getLogger(__name__)

# References keeps the thread's root and its most recent ids; a very long chain helps nobody
# and some servers refuse very long headers.
REFERENCES_WRITTEN = 20
MAX_RECIPIENTS = 100
_SUBJECT_LENGTH = Message._meta.get_field("subject").max_length


class ReplyValidationError(ValidationError):
    """A reply that cannot be sent as asked; names the field and the offending address."""

    def __init__(self, field: str, message: str, address: str = "") -> None:
        super().__init__({field: [message]})
        self.field = field
        self.address = address


@dataclass(frozen=True)
class AttachmentUpload:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


# ---------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------
def references_for(parent_references: str, parent_id: str) -> str:
    """The parent's References plus the parent, capped: the root and the latest ids are kept."""
    chain = [i for i in message_ids(parent_references) if i != parent_id] + ([parent_id] if parent_id else [])
    if len(chain) > REFERENCES_WRITTEN:
        chain = chain[:1] + chain[-(REFERENCES_WRITTEN - 1):]
    return " ".join(f"<{i}>" for i in chain)


def parse_recipients(field: str, values: Iterable[Any] | None) -> list[dict[str, str]]:
    """Recipients as [{"name", "address"}], from strings ("a@b", "Ann <a@b>") or dicts; validated."""
    from email.utils import parseaddr

    result: list[dict[str, str]] = []
    for value in values or ():
        if isinstance(value, dict):
            name, address = value.get("name", ""), value.get("address", "")
        else:
            text = str(value)
            if has_control_characters(text):
                raise ReplyValidationError(field, f"{text!r} is not a valid email address.", text)
            # Only "Name <address>" is split; anything else must be a bare address as a whole,
            # so "not an address" is reported as written rather than parsed down to "not".
            name, address = parseaddr(text) if text.rstrip().endswith(">") else ("", text)
            if not address:
                address = text
        address = (address or "").strip()
        try:
            if has_control_characters(address) or "," in address:
                raise ValidationError("control characters")
            validate_email(address)
        except ValidationError:
            raise ReplyValidationError(field, f"{address!r} is not a valid email address.", address) from None
        if address.lower() not in {r["address"].lower() for r in result}:
            result.append({"name": header_safe(name), "address": address})
    return result


def sender_name(inbox: Any, author: Agent | None) -> str:
    """ "Ada from Support" when the inbox shows agents' names, else the inbox's sender name."""
    team = header_safe(inbox.sender_name or inbox.display_name)
    if author is not None and inbox.use_agent_name and author.name:
        return f"{header_safe(author.name)} from {team}" if team else header_safe(author.name)
    return team


def _safe_filename(name: str) -> str:
    name = header_safe(name).replace("/", "_").replace("\\", "_").strip(". ")
    return name[:200] or "attachment"


# ---------------------------------------------------------------------------
# Queueing
# ---------------------------------------------------------------------------
def queue_reply(
    conversation: Conversation,
    *,
    author: Agent | None = None,
    text: str,
    html: str | None = None,
    to: Iterable[Any] | None = None,
    cc: Iterable[Any] | None = None,
    bcc: Iterable[Any] | None = None,
    attachments: Iterable[AttachmentUpload | Any] = (),
    priority: int | None = None,
    kind: str = MessageKind.EMAIL,
    template: str = "reply",
    automatic_reason: str = "",
) -> Message:
    """Store an outgoing email as queued (delivery starts on commit), or an internal note.

    Raises ReplyValidationError naming the field and the address when a recipient is invalid
    or outside the inbox's allowed domains.
    """
    inbox = conversation.inbox
    if kind == MessageKind.NOTE:
        return _store_note(conversation, author, text)

    recipients = _recipients(conversation, to, cc, bcc)
    parent = (conversation.messages.filter(direction=Direction.IN, kind=MessageKind.EMAIL)
              .order_by("-created_at", "-id").first())
    parent_id = (parent.header_message_id or parent.message_id) if parent else ""
    context = {
        "text": text, "signature": inbox.signature, "inbox": inbox, "agent": author,
        "conversation": conversation, "contact": conversation.contact,
        "html": nh3.clean(html) if html else "",
    }
    now = timezone.now()
    message = Message(
        conversation=conversation, inbox=inbox, direction=Direction.OUT, kind=MessageKind.EMAIL, author=author,
        message_id=make_message_id(conversation.public_id, settings.SWITCHBOARD_MESSAGE_ID_DOMAIN or inbox.domain),
        in_reply_to=f"<{parent_id}>" if parent_id else "",
        references=references_for(parent.references if parent else "", parent_id),
        from_address=inbox.address, from_name=sender_name(inbox, author),
        reply_to=[{"name": "", "address": inbox.reply_to}] if inbox.reply_to else [],
        subject=reply_subject(parent.subject if parent else conversation.subject, _SUBJECT_LENGTH),
        text=render_to_string(f"emails/{template}.txt", context).strip() + "\n",
        html=render_to_string(f"emails/{template}.html", context),
        sent_at=now, created_at=now, queued_at=now,
        priority=Priority.NORMAL if priority is None else priority,
        is_automatic=bool(automatic_reason), automatic_reason=automatic_reason,
        delivery_status=DeliveryStatus.QUEUED,
        delivery_history=[{"at": now.isoformat(), "from": "", "to": DeliveryStatus.QUEUED,
                           "detail": f"queued by {author.name}" if author else "queued"}],
        **recipients,
    )
    message.header_message_id = message.message_id
    with transaction.atomic():
        message.save()
        _store_attachments(message, attachments)
        _store_composed(message)
        Conversation.objects.filter(pk=conversation.pk).update(last_message_at=now)
        deliver_on_commit(message.pk, message.inbox_id)
        _publish_created(message)
    return message


def _recipients(conversation: Conversation, to: Any, cc: Any, bcc: Any) -> dict[str, list[dict[str, str]]]:
    contact = conversation.contact
    fields = {
        "to": parse_recipients("to", to) if to else [{"name": header_safe(contact.name), "address": contact.address}],
        "cc": parse_recipients("cc", cc),
        "bcc": parse_recipients("bcc", bcc),
    }
    total = sum(len(v) for v in fields.values())
    if not fields["to"] and not fields["cc"] and not fields["bcc"]:
        raise ReplyValidationError("to", "A reply needs at least one recipient.")
    if total > MAX_RECIPIENTS:
        raise ReplyValidationError("to", f"At most {MAX_RECIPIENTS} recipients per reply.")
    allowed = conversation.inbox.allowed_domains
    if allowed:
        for field, people in fields.items():
            for person in people:
                domain = person["address"].rpartition("@")[2].lower()
                if domain not in allowed:
                    raise ReplyValidationError(
                        field, f"{person['address']} is outside the domains this inbox may write to.",
                        person["address"])
    return fields


def _store_composed(message: Message) -> None:
    """Keep the email as it will leave, in `raw` with its SHA-256, as incoming mail keeps what arrived.

    Composed once, here (RFC 5322's Date is when the message was ready to send): delivery, a
    retry and a deliberate resend all send these bytes, and a manager can download them.
    """
    from conversations.outgoing.compose import compose

    data = compose(message)
    message.raw.save("outgoing.eml", ContentFile(data), save=False)
    message.raw_sha256 = hashlib.sha256(data).hexdigest()
    message.raw_size = len(data)
    Message.objects.filter(pk=message.pk).update(raw=message.raw.name, raw_sha256=message.raw_sha256,
                                                 raw_size=message.raw_size)


def _store_attachments(message: Message, attachments: Iterable[Any]) -> None:
    for upload in attachments:
        if isinstance(upload, AttachmentUpload):
            filename, content, content_type = upload.filename, upload.content, upload.content_type
        else:  # a Django UploadedFile
            filename, content = upload.name, upload.read()
            content_type = getattr(upload, "content_type", None) or "application/octet-stream"
        row = Attachment(
            message=message, filename=_safe_filename(filename), content_type=header_safe(content_type),
            size=len(content), sha256=hashlib.sha256(content).hexdigest(),
        )
        row.file.save("attachment", ContentFile(content), save=False)
        row.save()


def _store_note(conversation: Conversation, author: Agent | None, text: str) -> Message:
    # A note has no delivery status and a Message-ID no mail server will ever see.
    note_id = f"note.{uuid.uuid4().hex}@notes.switchboard.invalid"
    with transaction.atomic():
        note = Message.objects.create(
            conversation=conversation, inbox=conversation.inbox, direction=Direction.OUT, kind=MessageKind.NOTE,
            author=author, message_id=note_id, message_id_synthetic=True, text=text,
            from_name=author.name if author else "",
        )
        _publish_created(note)
    return note


def _publish_created(message: Message) -> None:
    # The initial "queued" rides on message.created; message.status events announce changes.
    conversation = message.conversation
    payload = {"conversation": str(conversation.public_id), "message": str(message.public_id),
               "kind": message.kind, "status": message.delivery_status}
    publish(MESSAGE_CREATED, conversation.department_id, payload)
