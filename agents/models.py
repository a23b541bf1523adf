"""Agent: a human (with a Django user) or an AI model, member of departments."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from config.encryption import EncryptedTextField
from departments.models import Department


class AgentKind(models.TextChoices):
    HUMAN = "human", "Human"
    AI = "ai", "AI"


class Presence(models.TextChoices):
    ONLINE = "online", "Online"
    AWAY = "away", "Away"
    OFFLINE = "offline", "Offline"


class Agent(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=AgentKind.choices, default=AgentKind.HUMAN)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="agent"
    )
    name = models.CharField(max_length=120, help_text="Shown to colleagues and, for replies, to customers.")
    departments = models.ManyToManyField(Department, related_name="agents", blank=True)
    capacity = models.PositiveIntegerField(
        null=True, blank=True, help_text="Open conversations at once; empty means the department default."
    )
    presence = models.CharField(max_length=10, choices=Presence.choices, default=Presence.OFFLINE)
    presence_changed_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(
        default=True, help_text="A disabled agent is assigned nothing (AI agents are online while enabled)."
    )
    last_assigned_at = models.DateTimeField(
        null=True, blank=True, help_text="When routing last gave this agent a conversation."
    )
    # AI backends: an OpenAI-compatible endpoint, a model name and a key kept encrypted.
    ai_base_url = models.URLField(blank=True)
    ai_model = models.CharField(max_length=120, blank=True)
    ai_api_key = EncryptedTextField(blank=True)
    ai_instructions = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="ai", user__isnull=True) | models.Q(kind="human", user__isnull=False),
                name="agent_human_has_user_ai_has_none",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == AgentKind.HUMAN and not self.user_id:
            raise ValidationError({"user": "A human agent needs a user account."})
        if self.kind == AgentKind.AI:
            if self.user_id:
                raise ValidationError({"user": "An AI agent has no user account."})
            if not self.ai_model:
                raise ValidationError({"ai_model": "Name the model this AI agent uses."})
