"""The API's own rows: tokens for scripts and bots, idempotency keys, uploads waiting for a reply.

They live in the API's app (layer 3, beside the code that reads them) rather than in agents/:
a token is only ever read by the API's authentication, and an idempotency key points at a
Message, which agents/ may not import.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from agents.models import Agent
from conversations.models import Message

TOKEN_PREFIX = "sb_"  # noqa: S105  (a visible prefix, not a secret)
VISIBLE_CHARS = 11  # "sb_" and 8 characters: enough to tell tokens apart in a list, useless alone


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A personal token (for a user's scripts) or a bot token (acts as one Agent). Stored hashed."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, help_text="What it is for, e.g. “nightly export”.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="api_tokens", help_text="A personal token acts as this user.")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens",
                              help_text="A bot token acts as this agent (an AI agent or an external bot).")
    prefix = models.CharField(max_length=VISIBLE_CHARS, editable=False)
    secret_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, agent__isnull=True)
                | models.Q(user__isnull=True, agent__isnull=False),
                name="api_token_user_or_agent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def new_secret(self) -> str:
        """Give the token a fresh secret and return it: the only time anyone sees it."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.secret_sha256 = secret[:VISIBLE_CHARS], digest(secret)
        return secret

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=self.revoked_at)


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key on a reply or note: the same key twice makes one message."""

    scope = models.CharField(max_length=40, help_text="Whose key: user:<id> or agent:<id>.")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request it was first used with.")
    message = models.ForeignKey(Message, null=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_key_once_per_caller")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"


def upload_to(instance: models.Model, filename: str) -> str:
    return f"uploads/{timezone.now():%Y/%m/%d}/{uuid.uuid4().hex}"


class Upload(models.Model):
    """A file uploaded for a reply, waiting to be attached; only its uploader may attach it."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="+")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    file = models.FileField(upload_to=upload_to, max_length=255)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.filename
