"""Stopping the servers and workers the tests and benchmarks start in their own sessions."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen | None, *, kill: bool = False, timeout: float = 20.0) -> None:
    """End a process started with start_new_session=True and every child it forked: SIGTERM
    (SIGKILL at once when `kill`, as in a crash), then SIGKILL if it is still there after
    `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:  # it ended between the poll and the signal
        process.wait(timeout=10)
