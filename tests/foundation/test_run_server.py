"""The whole server as `make run` starts it: web, worker, beat and a private Redis, on embedded defaults."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.servers.asgi import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _websocket_handshake(port: int, cookie: str = "") -> str:
    """Open a websocket the way a browser does and return the server's status line."""
    request = (
        "GET /ws/console/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Origin: http://127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("run-var")
    port = free_port()
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS"}
    }
    env.update(SWITCHBOARD_VAR_DIR=str(var_dir), PORT=str(port), HOST="127.0.0.1",
               SWITCHBOARD_ADMIN_USERNAME="manager", SWITCHBOARD_ADMIN_PASSWORD="a-long-test-password")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True, cwd=ROOT)
    bootstrap = subprocess.run([*manage, "ensure_manager"], env=env, check=True, capture_output=True, text=True,
                               cwd=ROOT)
    log_path = var_dir / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*manage, "runswitchboard"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        yield {"port": port, "process": process, "log": log_path, "var_dir": var_dir, "bootstrap": bootstrap.stdout}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_first_run_creates_the_manager_account(running_server):
    assert "Created the manager account 'manager'" in running_server["bootstrap"]


def test_health_reports_database_and_embedded_redis(running_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{running_server['port']}/healthz") as response:
        body = response.read().decode()
    assert '"database": {"status": "ok"' in body
    assert '"redis": {"status": "ok"' in body
    assert (running_server["var_dir"] / "redis.sock").exists()


def test_manager_signs_in_to_the_admin_and_the_websocket_refuses_strangers(running_server):
    port = running_server["port"]
    base = f"http://127.0.0.1:{port}"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = opener.open(f"{base}/admin/login/").read().decode()
    assert "Switchboard" in login_page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)

    assert _websocket_handshake(port).startswith("HTTP/1.1 403"), "an anonymous websocket must be refused"

    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "manager",
                                   "password": "a-long-test-password", "next": "/admin/"}).encode()
    request = urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=form, headers={"Referer": base})
    index = opener.open(request).read().decode()
    assert "Mailboxes, departments and agents" in index
    assert "Inboxes" in index

    cookies = "; ".join(f"{c.name}={c.value}" for c in jar)
    assert _websocket_handshake(port, cookies).startswith("HTTP/1.1 101"), "a signed-in manager gets a websocket"


def test_worker_and_beat_run_beside_the_web_process(running_server):
    deadline = time.monotonic() + 60
    log = ""
    while time.monotonic() < deadline:
        log = running_server["log"].read_text(errors="replace")
        if " ready." in log and "beat: Starting" in log:
            break
        time.sleep(0.5)
    assert " ready." in log, log[-3000:]
    assert "beat: Starting" in log, log[-3000:]


def test_sigterm_stops_everything(running_server):
    process = running_server["process"]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (running_server["var_dir"] / "redis.sock").exists():
        time.sleep(0.2)
    assert not (running_server["var_dir"] / "redis.sock").exists(), "the private Redis is still running"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running_server["port"]), timeout=2).close()
