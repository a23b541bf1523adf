"""Re-encrypt every stored secret with the newest key of FIELD_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from config.encryption import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt all secrets with the first key of FIELD_ENCRYPTION_KEYS (after adding a new key)."

    def handle(self, *args, **options) -> None:
        total = 0
        for model in apps.get_models():
            fields = [f.name for f in model._meta.fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            with transaction.atomic():
                # Reading decrypts with whichever key wrote it; saving encrypts with the first key.
                for row in model.objects.select_for_update().only("pk", *fields).iterator():
                    row.save(update_fields=fields)
                    total += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the secrets of {total} rows."))
