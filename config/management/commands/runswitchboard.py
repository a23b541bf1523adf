"""Start everything under one supervisor: embedded Redis (when REDIS_URL is unset), then the
web process, a Celery worker and Celery beat from the Procfile via honcho. Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import embedded_redis
from config.checks import unreadable_secrets


class Command(BaseCommand):
    help = "Run the web process, a Celery worker and Celery beat (and a private Redis if needed)."

    def handle(self, *args, **options) -> None:
        unreadable = unreadable_secrets()
        if unreadable:
            raise CommandError(
                "Stored secrets cannot be decrypted with FIELD_ENCRYPTION_KEYS "
                f"({', '.join(unreadable)}). Restore the key they were written with "
                "(var/field_encryption_key, or the FIELD_ENCRYPTION_KEYS of the deployment) and start again."
            )
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        redis_process = None
        if settings.REDIS_EMBEDDED:
            redis_process = embedded_redis.start(settings.REDIS_SOCKET)
            self.stdout.write(f"Embedded Redis listening on {settings.REDIS_SOCKET}")
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        self.stdout.write(self.style.SUCCESS(
            f"\nSwitchboard is starting.\n  Admin:     {base}/admin/\n"
            f"  Console:   {base}/  (websocket {base.replace('http', 'ws', 1)}/ws/console/)\n"
            f"  Health:    {base}/healthz\nPress Ctrl-C to stop.\n"
        ))
        env = {**os.environ, "HOST": host, "PORT": port, "PYTHON": sys.executable}
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", str(settings.BASE_DIR / "Procfile")],
            cwd=settings.BASE_DIR, env=env,
        )

        def forward(signum: int, frame: object) -> None:
            # A terminal's Ctrl-C reaches the whole group already; a service manager's SIGTERM
            # reaches only us, so pass it on and let honcho stop its children.
            if honcho.poll() is None:
                honcho.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            honcho.wait()
        finally:
            embedded_redis.stop(redis_process)
        if honcho.returncode not in (0, -signal.SIGTERM, -signal.SIGINT, 130, 143):
            raise SystemExit(honcho.returncode)
