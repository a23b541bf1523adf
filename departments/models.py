"""Department: a team that works one or more mailboxes."""

from __future__ import annotations

from django.db import models


class RoutingStrategy(models.TextChoices):
    ROUND_ROBIN = "round_robin", "Round robin"
    LEAST_BUSY = "least_busy", "Least busy"
    MANUAL = "manual", "Manual (agents pick)"


class Department(models.Model):
    name = models.CharField(max_length=120, unique=True)
    routing_strategy = models.CharField(
        max_length=20, choices=RoutingStrategy.choices, default=RoutingStrategy.ROUND_ROBIN
    )
    default_capacity = models.PositiveIntegerField(
        default=10, help_text="Open conversations an agent carries at once unless the agent says otherwise."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
