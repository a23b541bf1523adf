"""Create the first manager account when there is none.

Credentials come from SWITCHBOARD_ADMIN_USERNAME / _EMAIL / _PASSWORD, or are generated and
printed once (and only once: the next run finds the account and says nothing of its password).
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a first manager (superuser) account unless one exists."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True, is_active=True).exists():
            self.stdout.write("A manager account exists already.")
            return
        username = os.environ.get("SWITCHBOARD_ADMIN_USERNAME", "admin")
        email = os.environ.get("SWITCHBOARD_ADMIN_EMAIL", "")
        password = os.environ.get("SWITCHBOARD_ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"Created the manager account {username!r}."))
        if generated:
            self.stdout.write(
                self.style.WARNING(f"Its password, shown this once: {password}\n"
                                   "Change it in the admin after signing in.")
            )
