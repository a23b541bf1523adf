"""Department: a team that works one or more mailboxes."""

from __future__ import annotations

import uuid

from django.db import models


class RoutingStrategy(models.TextChoices):
    ROUND_ROBIN = "round_robin", "Round robin"
    LEAST_BUSY = "least_busy", "Least busy"
    MANUAL = "manual", "Manual (agents pick)"


class Department(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    routing_strategy = models.CharField(
        max_length=20, choices=RoutingStrategy.choices, default=RoutingStrategy.ROUND_ROBIN
    )
    default_capacity = models.PositiveIntegerField(
        default=10, help_text="Open conversations an agent carries at once unless the agent says otherwise."
    )
    ai_first = models.BooleanField(
        default=False, help_text="Offer new conversations to the department's AI agent before its people."
    )
    return_on_offline = models.BooleanField(
        default=False,
        help_text="When an agent goes offline, their open conversations return to the queue after the grace period.",
    )
    offline_grace_seconds = models.PositiveIntegerField(
        default=300, help_text="How long an agent may be offline before their conversations return to the queue."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
