"""The real ASGI server (uvicorn, the Procfile's web process) as a separate process for tests,
and a small websocket client.

The server shares the test database and the test Redis (`worker_environment`), so rows a test
commits and events a test publishes reach it as they would reach production. The client speaks
just enough RFC 6455 to be a patient browser tab: it answers the server's pings and reports a close.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.processes import stop_process_group
from tests.servers.worker import ROOT, worker_environment

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


class WebSocketClosed(AssertionError):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the server closed the websocket: code {code} {reason!r}")
        self.code = code


@dataclass
class WebSocket:
    """One client connection; frames from the server are read into a buffer that survives timeouts."""

    sock: socket.socket
    buffer: bytes = b""

    @classmethod
    def open(cls, port: int, path: str, cookie: str = "") -> WebSocket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n"
        )
        sock.sendall(request.encode())
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            client._fill(10.0)
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        assert status.startswith("HTTP/1.1 101"), f"websocket refused: {status}"
        return client

    def _fill(self, timeout: float) -> bool:
        """Read more bytes; False when nothing came within `timeout`."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not chunk:
            raise WebSocketClosed(None, "connection dropped without a close frame")
        self.buffer += chunk
        return True

    def _frame(self) -> tuple[int, bytes] | None:
        """The next whole frame in the buffer, if there is one (server frames are never masked)."""
        if len(self.buffer) < 2:
            return None
        opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if length in (126, 127):
            size = 2 if length == 126 else 8
            if len(self.buffer) < 2 + size:
                return None
            length = int.from_bytes(self.buffer[2 : 2 + size], "big")
            offset += size
        if len(self.buffer) < offset + length:
            return None
        payload, self.buffer = self.buffer[offset : offset + length], self.buffer[offset + length :]
        return opcode, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode, 0x80 | len(payload)])  # control frames only: < 126 bytes
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive_json(self, timeout: float) -> dict[str, Any] | None:
        """The next text message within `timeout` seconds, or None; pings are answered on the way."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._fill(remaining):
                    return None
                continue
            opcode, payload = frame
            if opcode == _TEXT:
                return json.loads(payload)
            if opcode == _PING:
                self._send(_PONG, payload)
            elif opcode == _CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise WebSocketClosed(code, payload[2:].decode(errors="replace"))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the server may have closed it first
            self._send(_CLOSE, struct.pack("!H", 1000))
        self.sock.close()


@dataclass
class AsgiServer:
    port: int
    log_path: Path
    process: subprocess.Popen
    sockets: list[WebSocket] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def websocket(self, path: str, cookie: str = "") -> WebSocket:
        client = WebSocket.open(self.port, path, cookie)
        self.sockets.append(client)
        return client


def web_command(port: int) -> list[str]:
    """The Procfile's web process, as `make run` starts it, on 127.0.0.1:`port`."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    words = shlex.split(line.removeprefix("web:"))
    values = {"$PYTHON": sys.executable, "$HOST": "127.0.0.1", "$PORT": str(port)}
    return [values.get(word, word) for word in words]


@pytest.fixture
def asgi_server(tmp_path, transactional_db) -> Iterator[AsgiServer]:
    """The web server serving config.asgi as `make run` does, against this test's database and Redis."""
    port = free_port()
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            web_command(port), cwd=ROOT, env=worker_environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = AsgiServer(port, log_path, process)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield server
    finally:
        for client in server.sockets:
            client.close()
        stop_process_group(process)
