"""A department, its agents and waiting conversations, as routing sees them."""

from __future__ import annotations

import pytest

from agents.models import Presence
from tests import factories


def waiting_conversation(inbox, *, automatic: bool = False, archived: bool = False, **fields):
    """A conversation that started with one incoming email, unassigned, as ingest leaves it."""
    conversation = factories.ConversationFactory(inbox=inbox, archived=archived, **fields)
    factories.MessageFactory(conversation=conversation, is_automatic=automatic)
    return conversation


def online_agent(department, name: str, *, capacity: int | None = None, presence: str = Presence.ONLINE):
    return factories.AgentFactory(user__username=name, name=name.title(), departments=[department],
                                  capacity=capacity, presence=presence)


@pytest.fixture
def inbox(db):
    return factories.InboxFactory(department=factories.DepartmentFactory(name="Support", default_capacity=50))


# ---------------------------------------------------------------------------
# One real ASGI server (the Procfile's web process) and one Celery worker per module
# ---------------------------------------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from django.conf import settings as django_settings  # noqa: E402
from django.test import Client  # noqa: E402

from tests.actions.conftest import tap  # noqa: E402, F401  (the event tap: a real channel in real groups)
from tests.servers.asgi import AsgiServer, free_port, wait_for, web_command  # noqa: E402
from tests.servers.processes import stop_process_group  # noqa: E402
from tests.servers.worker import ROOT, WorkerProcess, worker_environment  # noqa: E402

# Short enough for tests to watch a reload and a crash; the server, the worker and this
# process must agree, so the fixtures set them for all three.
LIVE_SETTINGS = {"PRESENCE_GRACE_SECONDS": "3", "PRESENCE_SOCKET_TTL_SECONDS": "3", "LIVE_RECHECK_SECONDS": "1",
                 "EVENT_REPLAY_LENGTH": "50"}


def start_web(log_path: Path) -> AsgiServer:
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            web_command(port), cwd=ROOT, env=worker_environment(**LIVE_SETTINGS), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = AsgiServer(port, log_path, process)
    wait_for(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return server


def stop_web(server: AsgiServer, *, kill: bool = False) -> None:
    for client in server.sockets:
        client.close()
    stop_process_group(server.process, kill=kill)


@pytest.fixture(scope="module")
def live_server_process(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[AsgiServer]:
    """The web server for the whole module: the rows each test commits reach it through the shared database."""
    with django_db_blocker.unblock():
        server = start_web(tmp_path_factory.mktemp("web") / "web.log")
    yield server
    stop_web(server)


@pytest.fixture
def web(live_server_process, transactional_db, settings) -> Iterator[AsgiServer]:
    for name, value in LIVE_SETTINGS.items():
        setattr(settings, name, int(value))
    yield live_server_process
    for client in live_server_process.sockets:
        client.close()
    live_server_process.sockets.clear()


@pytest.fixture(scope="module")
def routing_worker(django_db_setup, django_db_blocker, tmp_path_factory, dovecot) -> Iterator[WorkerProcess]:
    """A real Celery worker for the module: polls, ingest, routing and their events run in it."""
    with django_db_blocker.unblock():
        from config.celery import app

        app.control.purge()  # tasks earlier tests left for workers that never ran
        worker = WorkerProcess(
            name="routing", log_path=tmp_path_factory.mktemp("worker") / "celery.log",
            args=[sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=2",
                  "--pool=prefork", "--hostname=routing@%h", "--without-gossip", "--without-mingle",
                  "--without-heartbeat"],
            env=worker_environment(MAIL_CA_FILE=str(dovecot.ca_file), **LIVE_SETTINGS)).start()
    yield worker
    worker.stop()


def session_cookie(user) -> str:
    """The cookie a browser holds after signing in; the session row is in the shared database."""
    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"


def send_json(socket, message: dict) -> None:
    """A masked text frame from the client, as a browser sends it."""
    import json
    import struct

    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload))
    socket.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def receive_all(socket, seconds: float) -> list[dict]:
    """Every message that arrives within `seconds`."""
    import time

    deadline, received = time.monotonic() + seconds, []
    while (remaining := deadline - time.monotonic()) > 0:
        message = socket.receive_json(timeout=remaining)
        if message is None:
            break
        received.append(message)
    return received


def receive_until(socket, predicate, timeout: float = 20.0) -> list[dict]:
    """Messages up to and including the first that `predicate` accepts; fails after `timeout`."""
    import time

    deadline, received = time.monotonic() + timeout, []
    while (remaining := deadline - time.monotonic()) > 0:
        message = socket.receive_json(timeout=remaining)
        if message is None:
            break
        received.append(message)
        if predicate(message):
            return received
    raise AssertionError(f"no matching message within {timeout}s; got {received}")
