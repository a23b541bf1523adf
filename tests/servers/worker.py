"""Real Celery worker processes for tests, against the test database and the test Redis.

Tests that use them need committed rows: mark them `@pytest.mark.django_db(transaction=True)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.servers.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    """The URL of the database this test session uses (the test database, not the real one)."""
    params = connection.settings_dict
    if params["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/{params['NAME']}"


def worker_environment(**extra: str) -> dict[str, str]:
    """Environment for a child process that must see what the test sees."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": _database_url(),
        "SWITCHBOARD_VAR_DIR": str(settings.VAR_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "SECRET_KEY": settings.SECRET_KEY,
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "PYTHONUNBUFFERED": "1",
    }
    if not settings.REDIS_EMBEDDED:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    name: str
    log_path: Path
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    _log: object = field(default=None, repr=False)

    def start(self, wait: float = 30.0) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited early:\n{self.log()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker dies mid-task, as in a crash."""
        stop_process_group(self.process, kill=True)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process_group(self.process, timeout=timeout)
        if self._log:
            self._log.close()


@pytest.fixture
def celery_worker_factory(tmp_path, transactional_db) -> Iterator:
    """Start real `celery worker` processes: `celery_worker_factory(concurrency=1, name="w1")`."""
    started: list[WorkerProcess] = []

    def start(*, name: str | None = None, concurrency: int = 1, pool: str = "prefork",
              extra_args: tuple[str, ...] = (), **env: str) -> WorkerProcess:
        name = name or f"w{len(started) + 1}"
        worker = WorkerProcess(
            name=name,
            log_path=tmp_path / f"celery-{name}.log",
            args=[sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO",
                  f"--concurrency={concurrency}", f"--pool={pool}", f"--hostname={name}@%h",
                  "--without-gossip", "--without-mingle", "--without-heartbeat", *extra_args],
            env=worker_environment(**env),
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
