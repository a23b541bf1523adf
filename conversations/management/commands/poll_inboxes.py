"""`manage.py poll_inboxes [--inbox ADDRESS] [--once]`: poll in the foreground and say what happened."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from conversations.incoming.polling import list_due_inboxes, poll_inbox
from inboxes.models import Inbox


class Command(BaseCommand):
    help = "Poll inboxes over IMAP now and print what each poll did. Without --once, keep polling."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--inbox", metavar="ADDRESS", help="Only this inbox (its email address).")
        parser.add_argument("--once", action="store_true", help="Poll once and exit.")

    def handle(self, *args, inbox: str | None = None, once: bool = False, **options) -> None:
        chosen = Inbox.objects.filter(active=True)
        if inbox:
            chosen = chosen.filter(address__iexact=inbox)
            if not chosen.exists():
                raise CommandError(f"No active inbox with the address {inbox}.")
        ids = list(chosen.values_list("pk", flat=True))
        try:
            self._poll(ids)
            while not once:
                time.sleep(1)
                self._poll([pk for pk in list_due_inboxes() if pk in ids])
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")

    def _poll(self, ids: list[int]) -> None:
        for inbox in Inbox.objects.filter(pk__in=ids):
            result = poll_inbox(inbox.pk)
            style = self.style.ERROR if result.error else self.style.SUCCESS
            self.stdout.write(style(f"{timezone.now():%H:%M:%S} {inbox.address}: {result.summary()}"))
