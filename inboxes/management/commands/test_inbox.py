"""python manage.py test_inbox ADDRESS: test an inbox's connections step by step, as the admin's button does."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inboxes.connection_test import connection_steps
from inboxes.models import Inbox


class Command(BaseCommand):
    help = "Test an inbox's IMAP and SMTP connections step by step; exits 1 when a step fails."

    def add_arguments(self, parser) -> None:
        parser.add_argument("address", help="The inbox's email address.")
        parser.add_argument("--send-test-message", action="store_true",
                            help="Also send a message from the inbox to itself and wait for it to arrive.")

    def handle(self, *args, address: str, send_test_message: bool, **options) -> None:
        inbox = Inbox.objects.filter(address__iexact=address.strip()).first()
        if inbox is None:
            raise CommandError(f"No inbox has the address {address}.")
        failed = 0
        for step in connection_steps(inbox, send_test_message=send_test_message):
            mark = self.style.SUCCESS("ok  ") if step.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {step.name} ({step.seconds:.2f} s) {step.detail}")
            if not step.ok:
                failed += 1
                if step.advice:
                    self.stdout.write(f"       What to do: {step.advice}")
                fingerprint = step.data.get("certificate", {}).get("fingerprint")
                if fingerprint:
                    self.stdout.write(f"       Certificate SHA-256: {fingerprint}")
        if failed:
            raise CommandError(f"{failed} step(s) failed.", returncode=1)
        self.stdout.write(self.style.SUCCESS("Every step passed."))
