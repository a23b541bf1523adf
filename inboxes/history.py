"""The inbox change history: who changed which settings of an inbox, and when (never the values of secrets)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class InboxChange(models.Model):
    inbox = models.ForeignKey("inboxes.Inbox", on_delete=models.CASCADE, related_name="changes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=40, help_text="created, changed, trusted a certificate, …")
    fields = models.JSONField(default=list, help_text="Names of the settings changed; never their values.")

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.action} {', '.join(self.fields)}".strip()


def record_inbox_change(inbox: models.Model, user: object | None, action: str, fields: list[str] = ()) -> InboxChange:
    """Record one change; `fields` are names only, so a secret's value never lands here."""
    who = user if getattr(user, "is_authenticated", False) else None
    return InboxChange.objects.create(inbox=inbox, user=who, action=action, fields=list(fields))
