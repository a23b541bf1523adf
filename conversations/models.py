"""Contact, Conversation, Message, Attachment, CannedResponse and the quarantine of poison mail."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from agents.models import Agent
from departments.models import Department
from inboxes.models import Inbox


def _random_key(prefix: str, filename: str) -> str:
    """A storage key that owes nothing to the sender's file name (no traversal, no clashes)."""
    now = timezone.now()
    return f"{prefix}/{now:%Y/%m/%d}/{uuid.uuid4().hex}"


def raw_upload_to(instance: models.Model, filename: str) -> str:
    return _random_key("raw", filename) + ".eml"


def attachment_upload_to(instance: models.Model, filename: str) -> str:
    return _random_key("attachments", filename)


class Contact(models.Model):
    """A customer, identified by the parsed address — never by the display name."""

    address = models.EmailField(max_length=320)
    name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address"]
        constraints = [models.UniqueConstraint(Lower("address"), name="contact_address_unique_ci")]

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


class ConversationStatus(models.TextChoices):
    OPEN = "open", "Open"
    PENDING = "pending", "Pending"
    CLOSED = "closed", "Closed"


class Priority(models.IntegerChoices):
    LOW = 0, "Low"
    NORMAL = 1, "Normal"
    HIGH = 2, "High"
    URGENT = 3, "Urgent"


class Conversation(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Both lead a composite index below, which serves their lookups: no index of their own, one
    # less to update for every conversation stored.
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="conversations", db_index=False)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="conversations",
                                   db_index=False)
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="conversations")
    subject = models.CharField(max_length=998, blank=True)
    status = models.CharField(max_length=10, choices=ConversationStatus.choices, default=ConversationStatus.OPEN)
    assignee = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    archived = models.BooleanField(default=False, help_text="Imported history: stored, not routed.")
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="followups",
        help_text="The closed conversation this one follows up.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_message_at"]
        indexes = [
            models.Index(fields=["department", "status", "-last_message_at"]),
            models.Index(fields=["inbox", "contact"]),
        ]

    def __str__(self) -> str:
        return self.subject or f"Conversation {self.public_id}"


class Direction(models.TextChoices):
    IN = "in", "Incoming"
    OUT = "out", "Outgoing"


class MessageKind(models.TextChoices):
    EMAIL = "email", "Email"
    NOTE = "note", "Internal note"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    UNCERTAIN = "uncertain", "Uncertain: the server may have it"


class Message(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Both lead a composite index or unique constraint below, which serves their lookups: no
    # index of their own, two less to update for every message stored.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages",
                                     db_index=False)
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="messages", db_index=False)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=5, choices=MessageKind.choices, default=MessageKind.EMAIL)
    author = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages",
        help_text="The agent who wrote an outgoing message or note.",
    )

    # Threading. `message_id` is the dedup key, unique per inbox: the header's id (without
    # angle brackets), or a synthetic id from the content hash when the header is missing or
    # when a different message already uses it. `header_message_id` keeps what the header said.
    message_id = models.CharField(max_length=998)
    header_message_id = models.CharField(max_length=998, blank=True)
    message_id_synthetic = models.BooleanField(default=False)
    message_id_conflict = models.BooleanField(
        default=False, help_text="Another, different message of this inbox carries the same Message-ID."
    )
    in_reply_to = models.TextField(blank=True)
    references = models.TextField(blank=True)

    from_address = models.CharField(max_length=320, blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    to = models.JSONField(default=list, blank=True, help_text='[{"name": ..., "address": ...}]')
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True, help_text="Sanitized HTML.")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="The Date header.")
    created_at = models.DateTimeField(default=timezone.now)

    raw = models.FileField(upload_to=raw_upload_to, max_length=255, blank=True)
    raw_sha256 = models.CharField(max_length=64, blank=True)
    raw_size = models.PositiveBigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, blank=True, help_text="Hash of what makes the message itself.")

    is_automatic = models.BooleanField(default=False)
    automatic_reason = models.CharField(max_length=255, blank=True)
    too_large = models.BooleanField(default=False)
    parse_problems = models.TextField(blank=True, help_text="What the parser had to repair.")
    archived = models.BooleanField(default=False)

    # Where it came from on the IMAP server.
    imap_folder = models.CharField(max_length=255, blank=True)
    imap_uidvalidity = models.BigIntegerField(null=True, blank=True)
    imap_uid = models.BigIntegerField(null=True, blank=True)

    # Outgoing delivery: queued → sending → sent | failed | uncertain, by conditional updates.
    delivery_status = models.CharField(max_length=10, choices=DeliveryStatus.choices, blank=True)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    delivery_attempts = models.PositiveIntegerField(default=0)
    delivery_last_error = models.TextField(blank=True)
    delivery_server_reply = models.TextField(blank=True)
    delivery_history = models.JSONField(default=list, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sending_started_at = models.DateTimeField(null=True, blank=True)
    data_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="Set just before the message data is handed to the server."
    )
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["inbox", "message_id"], name="message_unique_per_inbox"),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            models.Index(fields=["delivery_status", "next_attempt_at"]),
            models.Index(fields=["inbox", "header_message_id"]),
            # A drain's next replies: an inbox's queued rows in order, without reading its history.
            models.Index(fields=["inbox", "id"], condition=models.Q(delivery_status="queued"),
                         name="message_queued_per_inbox"),
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.subject!r}"


class Attachment(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_upload_to, max_length=255)
    filename = models.CharField(max_length=255, blank=True, help_text="The sender's name for it: data only.")
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    content_id = models.CharField(max_length=998, blank=True)
    inline = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.filename or str(self.public_id)


class CannedResponse(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.CASCADE, related_name="canned_responses",
        help_text="Empty: every department can use it.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class QuarantineStatus(models.TextChoices):
    HELD = "held", "Held"
    RETRIED = "retried", "Imported on retry"
    DISCARDED = "discarded", "Discarded"


class QuarantinedMessage(models.Model):
    """A message that failed to parse or store: kept raw, with the error, for a manager to act on."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="quarantine")
    raw = models.FileField(upload_to=raw_upload_to, max_length=255, blank=True)
    raw_sha256 = models.CharField(max_length=64, blank=True)
    raw_size = models.PositiveBigIntegerField(default=0)
    error = models.TextField()
    details = models.TextField(blank=True)
    imap_folder = models.CharField(max_length=255, blank=True)
    imap_uidvalidity = models.BigIntegerField(null=True, blank=True)
    imap_uid = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=QuarantineStatus.choices, default=QuarantineStatus.HELD)
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["inbox", "imap_folder", "imap_uidvalidity", "imap_uid"],
                condition=models.Q(imap_uid__isnull=False),
                name="quarantine_unique_per_uid",
            )
        ]

    def __str__(self) -> str:
        return f"Quarantined message {self.public_id}: {self.error[:60]}"
