"""The organisation's sending policy: set once for all inboxes, overridden per inbox."""

from __future__ import annotations

import time

from django.db import models
from django.db.models.signals import post_delete, post_save

# Each process reads the policy at most this often: a delivery costs no extra query, and a
# change reaches every worker within this many seconds (at once in the process that saved it).
CACHE_SECONDS = 30.0
_cached: tuple[float, OrganisationPolicy] | None = None


class OrganisationPolicy(models.Model):
    """One row (see `current`): defaults that apply where an inbox leaves a setting empty."""

    allowed_recipient_domains = models.TextField(
        blank=True, help_text="One domain per line; replies to other domains are refused. "
        "An inbox with domains of its own uses those instead.")
    max_sends_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="Replies per inbox and hour; more wait in the queue, none is dropped. "
        "An inbox with a limit of its own uses that instead.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "organisation policy"

    def __str__(self) -> str:
        return "Organisation policy"

    @classmethod
    def current(cls) -> OrganisationPolicy:
        """The policy row, or an empty one (nothing restricted) before a manager saved it."""
        global _cached
        now = time.monotonic()
        if _cached is None or _cached[0] < now:
            _cached = (now + CACHE_SECONDS, cls.objects.order_by("pk").first() or cls())
        return _cached[1]

    @property
    def allowed_domains(self) -> list[str]:
        return parse_domains(self.allowed_recipient_domains)


def parse_domains(text: str) -> list[str]:
    return [line.strip().lower() for line in text.splitlines() if line.strip()]


def forget_cached_policy(**kwargs: object) -> None:
    global _cached
    _cached = None


post_save.connect(forget_cached_policy, sender=OrganisationPolicy, dispatch_uid="organisation-policy-saved")
post_delete.connect(forget_cached_policy, sender=OrganisationPolicy, dispatch_uid="organisation-policy-deleted")
