"""Parsing incoming mail in a helper process, while the worker stores what is already parsed.

Parsing (the stdlib's MIME parser, charsets, sanitizing) is pure Python and took 40% of the
ingest thread's CPU; under the GIL no thread can share it. So each worker process that
ingests mail starts one helper, `python -m inboxes.mailformat.parse_pool`, which parses a batch's
messages while the worker stores the batch before it. It is a plain child process with a
pipe each way, not multiprocessing: Celery's worker processes are daemonic and may not have
multiprocessing children. The helper imports no Django; it exits when its pipe closes, so it
never outlives the worker.

The helper only ever answers with a ParsedEmail or "parse it yourself": a message whose parse
failed there is parsed again in the worker, so a poison message reaches the quarantine with
the very error and traceback it always had. If the helper dies (killed, out of memory), the
messages it held are parsed in the worker and the next batch starts a new helper; after a few
deaths in a row the worker parses in place for good, as with INGEST_PARSE_PROCESS off.
Nothing is lost either way, it is only slower. Large messages are parsed in place, so that
their bytes are not copied between processes.

Requests and answers are pickles framed by their length. Both ends are this module, run by
the same Python; nothing else writes to the pipes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path

from inboxes.mailformat.parsing import ParsedEmail, parse_email

logger = logging.getLogger(__name__)

# Above this, a message is parsed in the worker: copying it to the helper and its parts back
# would cost more memory than the parse saves time.
IN_PLACE_BYTES = 1024 * 1024
GIVE_UP_AFTER = 3  # helpers lost in a row before a worker parses in place for good
_FRAME = struct.Struct("!Q")
_MISSING = object()
_ROOT = Path(__file__).resolve().parents[2]


class Ticket:
    """A message handed to the helper; `result()` is its parse, or None (parse it yourself).

    A ticket dropped unasked (its batch was abandoned) tells the helper, whose answer for it
    is then dropped when it comes, instead of being kept for nobody.
    """

    __slots__ = ("asked", "helper", "number")

    def __init__(self, helper: _Helper, number: int) -> None:
        self.helper, self.number, self.asked = helper, number, False

    def result(self) -> ParsedEmail | None:
        self.asked = True
        return self.helper.result(self.number)

    def __del__(self) -> None:
        if not self.asked:
            self.helper.forget(self.number)


class _Helper:
    """One helper process: requests go out on a thread (the pipe may be full while the helper
    parses), answers are read, in order, by whoever asks for one."""

    def __init__(self) -> None:
        env = dict(os.environ)  # the worker's own, with this project importable from anywhere
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", "inboxes.mailformat.parse_pool"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd=_ROOT, close_fds=True,
        )
        for pipe in (self.process.stdin, self.process.stdout):
            _widen(pipe)
        self.pid = os.getpid()  # the worker process that owns it (a forked child must not use it)
        self.broken = False
        self._numbers = 0
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._answers: dict[int, ParsedEmail | None] = {}  # answers read before they were asked for
        self._forgotten: set[int] = set()  # numbers nobody will ask for
        self._reading = threading.Lock()
        threading.Thread(target=self._send, name="switchboard-parse-sender", daemon=True).start()

    def submit(self, raw: bytes, headers_only: bool, own_addresses: frozenset[str]) -> Ticket:
        self._numbers += 1
        self._outbox.put((self._numbers, raw, headers_only, own_addresses))
        return Ticket(self, self._numbers)

    def _send(self) -> None:
        pipe = self.process.stdin
        while (request := self._outbox.get()) is not None:
            try:
                _write_frame(pipe, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
            except (OSError, ValueError):  # the helper is gone: its readers find out too
                self.broken = True
                return

    def result(self, number: int) -> ParsedEmail | None:
        with self._reading:
            if number in self._answers:
                return self._answers.pop(number)
            while not self.broken:
                frame = _read_frame(self.process.stdout)
                if frame is None:
                    self.broken = True
                    break
                answered, parsed = pickle.loads(frame)  # noqa: S301 — written by our own helper
                if answered == number:
                    return parsed
                if answered in self._forgotten:
                    self._forgotten.discard(answered)
                else:  # another batch's, parsed first: kept for its own asker
                    self._answers[answered] = parsed
            return None

    def forget(self, number: int) -> None:
        """Nobody will ask for this answer. (Called from __del__: takes no lock; set and dict
        operations are atomic under the GIL.)"""
        if self._answers.pop(number, _MISSING) is _MISSING:
            self._forgotten.add(number)

    def close(self) -> None:
        self.broken = True
        self._outbox.put(None)
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_lock = threading.Lock()
_helper: _Helper | None = None
_lost = 0  # helpers lost in a row
_given_up_pid: int | None = None  # the process that parses in place for good


def submit(raw: bytes, *, headers_only: bool, own_addresses: frozenset[str]) -> Ticket | None:
    """Hand `raw` to the helper; None when it is to be parsed in place."""
    if len(raw) > IN_PLACE_BYTES:
        return None
    helper = _current()
    return helper.submit(raw, headers_only, own_addresses) if helper is not None else None


def result(ticket: Ticket) -> ParsedEmail | None:
    """The helper's parse, or None: then the caller parses the message itself."""
    global _lost
    parsed = ticket.result()
    if parsed is not None:
        _lost = 0
    elif ticket.helper.broken:
        _drop(ticket.helper)
    return parsed


def _current() -> _Helper | None:
    global _helper
    from django.conf import settings

    if not settings.INGEST_PARSE_PROCESS:
        return None
    with _lock:
        if _given_up_pid == os.getpid():
            return None
        if _helper is None or _helper.pid != os.getpid():
            try:
                _helper = _Helper()
            except OSError as error:
                logger.warning("Parsing incoming mail in the worker itself: the parse helper cannot start (%s)", error)
                _give_up()
                return None
        return _helper


def _drop(helper: _Helper) -> None:
    """A helper died: its messages are parsed in place; the next batch starts another one."""
    global _helper, _lost
    with _lock:
        if _helper is not helper:
            return  # already dropped (each of its messages finds out)
        _helper = None
        _lost += 1
        code = helper.process.poll()
        if _lost >= GIVE_UP_AFTER:
            _give_up()
    logger.warning("The parse helper exited (code %s); its messages are parsed in the worker%s", code,
                   " from now on" if _given_up_pid == os.getpid() else "")
    helper.close()


def _give_up() -> None:
    global _given_up_pid
    _given_up_pid = os.getpid()


def _widen(pipe) -> None:
    """Room for a few parsed messages in the pipe (Linux; 64 KiB otherwise), so the helper
    can run ahead of the worker instead of waiting for each answer to be read."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1024 * 1024)


def _write_frame(pipe, data: bytes) -> None:
    pipe.write(_FRAME.pack(len(data)))
    pipe.write(data)
    pipe.flush()


def _read_frame(pipe) -> bytes | None:
    head = pipe.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = pipe.read(size)
    return data if len(data) == size else None


def _serve() -> None:
    """The helper: parse each request until the worker closes the pipe."""
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not break the protocol
    while (frame := _read_frame(requests)) is not None:
        number, raw, headers_only, own_addresses = pickle.loads(frame)  # noqa: S301 — from our own worker
        try:
            parsed = parse_email(raw, own_addresses=own_addresses, headers_only=headers_only)
        except Exception:
            parsed = None  # the worker parses it again, and quarantines it with its own error
        _write_frame(answers, pickle.dumps((number, parsed), protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _serve()
