"""Writing (and hashing) a message's files, raw bytes and attachments, on a few threads, ahead of its rows.

Creating a file costs little CPU but can wait a long time on the filesystem (its journal is
shared with the database's and the mail server's syncs: ~0.5 ms per file was measured here
under load). Ingest starts a batch's writes as soon as it knows which messages are new and
stores the earlier messages meanwhile; each message waits for its own files just before the
rows that name them, so a row never names a file that is not there.

Names come from the fields' upload_to (random keys), through the fields' storage: the sender's
file name never reaches a path.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import NamedTuple, Protocol

from django.core.files.base import ContentFile

from conversations.models import Attachment, Message

FILE_THREADS = 2
_RAW_FIELD = Message._meta.get_field("raw")
_ATTACHMENT_FIELD = Attachment._meta.get_field("file")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


class HasPayload(Protocol):
    payload: bytes


def _executor() -> ThreadPoolExecutor:
    """One pool per process: a forked Celery child must not use its parent's (dead) threads."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="switchboard-files")
            _pool_pid = os.getpid()
        return _pool


class StoredFile(NamedTuple):
    name: str  # the storage key
    sha256: str  # of the bytes written, hex


def _save(field, upload_name: str, data: bytes) -> StoredFile:
    # Hashed here rather than on the ingest thread: hashlib lets go of the GIL for all but tiny
    # inputs, so the file threads hash while ingest goes on.
    digest = hashlib.sha256(data).hexdigest()
    name = field.generate_filename(None, upload_name)
    return StoredFile(field.storage.save(name, ContentFile(data), max_length=field.max_length), digest)


class MessageFiles:
    """The raw file and the attachment files of one message, written ahead or on demand."""

    def __init__(self, raw: bytes, attachments: Sequence[HasPayload], *, ahead: bool) -> None:
        self._raw = raw
        self._attachments = attachments
        self._futures: list[Future[StoredFile]] | None = None
        if ahead:
            self._start()

    def _start(self) -> list[Future[StoredFile]]:
        if self._futures is None:
            pool = _executor()
            self._futures = [pool.submit(_save, _RAW_FIELD, "message.eml", self._raw)] + [
                pool.submit(_save, _ATTACHMENT_FIELD, "attachment", part.payload) for part in self._attachments]
        return self._futures

    def stored(self) -> tuple[StoredFile, list[StoredFile]]:
        """(the raw file, the attachments' files in order), once all are written.

        A failed write raises its error here (a full disk is an OSError: the caller retries
        the message later).
        """
        files = [future.result() for future in self._start()]
        return files[0], files[1:]

    def delete(self) -> None:
        """Delete whatever was written (waiting for writes still under way)."""
        if self._futures is None:
            return
        wait(self._futures)
        for future, field in zip(self._futures, [_RAW_FIELD] + [_ATTACHMENT_FIELD] * len(self._attachments),
                                 strict=True):
            if future.exception() is None:
                field.storage.delete(future.result().name)
        self._futures = None


def write_message_files(raw: bytes, attachments: Sequence[HasPayload], *, ahead: bool = True) -> MessageFiles:
    """Start writing a message's files now (`ahead`), or only when their names are asked for."""
    return MessageFiles(raw, attachments, ahead=ahead)
