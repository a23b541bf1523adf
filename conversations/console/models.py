"""The console's own rows: an agent's unsent draft per conversation, and what they last read."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from conversations.models import Conversation, Message


class DraftMode(models.TextChoices):
    REPLY = "reply", "Reply"
    NOTE = "note", "Internal note"


class Draft(models.Model):
    """What an agent was writing in a conversation: kept on the server so a reload or another tab finds it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=5, choices=DraftMode.choices, default=DraftMode.REPLY)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True, help_text="The rich-text body, sanitized when sent.")
    to = models.TextField(blank=True)
    cc = models.TextField(blank=True)
    bcc = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "conversation"], name="draft_once_per_user")]

    def __str__(self) -> str:
        return f"Draft by {self.user_id} in {self.conversation_id}"


def draft_file_path(instance: models.Model, filename: str) -> str:
    return f"drafts/{timezone.now():%Y/%m/%d}/{uuid.uuid4().hex}"


class DraftFile(models.Model):
    """A file an agent attached to their draft: uploaded when chosen, so a reload keeps it too.
    Attached to the reply when it is sent; deleted with the draft (its bytes by the handler)."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    draft = models.ForeignKey(Draft, on_delete=models.CASCADE, related_name="files")
    file = models.FileField(upload_to=draft_file_path, max_length=255)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.filename


class ReadMarker(models.Model):
    """When an agent last looked at a conversation: newer activity shows as unread to them."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "conversation"], name="read_marker_once_per_user")]

    def __str__(self) -> str:
        return f"Read by {self.user_id} in {self.conversation_id} at {self.read_at}"


class Mention(models.Model):
    """A colleague named with @ in an internal note: shown to them until they open the conversation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "message"], name="mention_once_per_note")]

    def __str__(self) -> str:
        return f"{self.user_id} mentioned in {self.message_id}"
