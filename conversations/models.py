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

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
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
    # Routing: why the conversation is where it is (shown to agents), since when.
    routing_reason = models.CharField(max_length=255, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True,
                                     help_text="When it started waiting in its department's queue.")

    class Meta:
        ordering = ["-last_message_at"]
        indexes = [
            models.Index(fields=["department", "status", "-last_message_at"]),
            # The API's and console's lists: a department's page in order, whatever the status.
            models.Index(fields=["department", "-last_message_at", "-id"], name="conversation_department_recent"),
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
    BOUNCED = "bounced", "Bounced"


class SentCopyStatus(models.TextChoices):
    """Whether the copy of a sent reply is in the mailbox's Sent folder (inboxes that save one)."""

    NONE = "", "Not saved (the inbox keeps no copy)"
    PENDING = "pending", "Pending: to be saved, or tried again"
    STORED = "stored", "Stored in the Sent folder"
    FAILED = "failed", "Failed: no copy in the Sent folder"


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
    new_participant = models.BooleanField(
        default=False, help_text="Its sender was not yet part of the conversation its headers threaded it into.",
    )
    display_name_has_address = models.BooleanField(
        default=False, help_text="The sender's display name holds an email address, maybe not the real one.",
    )
    automatic_reason = models.CharField(max_length=255, blank=True)
    too_large = models.BooleanField(default=False)
    parse_problems = models.TextField(blank=True, help_text="What the parser had to repair.")
    archived = models.BooleanField(default=False)

    # Where it came from on the IMAP server.
    imap_folder = models.CharField(max_length=255, blank=True)
    imap_uidvalidity = models.BigIntegerField(null=True, blank=True)
    imap_uid = models.BigIntegerField(null=True, blank=True)
    duplicate_deliveries = models.JSONField(
        default=list, blank=True, help_text='Later deliveries skipped as copies: [{"folder", "uidvalidity", "uid"}].',
    )

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
    # The copy in the Sent folder (IMAP APPEND), retried with a backoff; never a second SMTP send.
    sent_copy_status = models.CharField(max_length=10, choices=SentCopyStatus.choices, blank=True, default="")
    sent_copy_attempts = models.PositiveSmallIntegerField(default=0)
    sent_copy_next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_copy_error = models.TextField(blank=True)

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
            # The loop guard's per-inbox hourly count; only automatic outgoing rows enter it,
            # so storing incoming mail never updates it.
            models.Index(fields=["inbox", "created_at"], condition=models.Q(direction="out", is_automatic=True),
                         name="message_automatic_sent"),
            # Sent copies still to save: the retry finds them without reading every message.
            models.Index(fields=["sent_copy_next_attempt_at"], condition=models.Q(sent_copy_status="pending"),
                         name="message_sent_copy_pending"),
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


class ConversationActivity(models.Model):
    """Who did what to a conversation, written by the action that did it (conversations.actions)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="activities")
    verb = models.CharField(max_length=40)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    actor_agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=255, blank=True, help_text="Who, in words: a name, or 'routing'.")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "conversation activities"

    def __str__(self) -> str:
        return f"{self.actor_label or 'system'} {self.verb}"


class CannedResponse(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    body = models.TextField()
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.CASCADE, related_name="canned_responses",
        help_text="Empty: every department can use it.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="canned_responses",
        help_text="Set: a personal response, seen by its owner only.",
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


class AutomaticReplyRefusal(models.Model):
    """An automatic message (an acknowledgement, an AI reply) the loop guard did not send, and why."""

    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="automatic_refusals")
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="automatic_refusals")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="automatic_refusals",
                                help_text="The incoming message it would have answered.")
    kind = models.CharField(max_length=32, help_text="What would have been sent: acknowledgement, ai_reply, ...")
    rule = models.CharField(max_length=32, help_text="The loop guard's rule that refused it.")
    reason = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A task run twice (acks_late redelivery) records its refusal once.
            models.UniqueConstraint(fields=["message", "kind"], name="automatic_refusal_once_per_message"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} refused: {self.reason}"
