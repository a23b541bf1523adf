"""The default storage (core.storage.MediaStorage): FileSystemStorage's results, quicker for bytes."""

from __future__ import annotations

import os
import shutil

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage


def test_bytes_are_saved_under_the_name_given_with_the_upload_permissions(media_root):
    name = default_storage.save("raw/2026/11/30/0123abcd.eml", ContentFile(b"Subject: hi\r\n\r\nbody\r\n"))

    assert name == "raw/2026/11/30/0123abcd.eml"
    path = media_root / name
    assert path.read_bytes() == b"Subject: hi\r\n\r\nbody\r\n"
    assert path.stat().st_mode & 0o777 == 0o644  # FILE_UPLOAD_PERMISSIONS, whatever the umask
    with default_storage.open(name) as handle:
        assert handle.read() == b"Subject: hi\r\n\r\nbody\r\n"


def test_a_taken_name_is_never_overwritten(media_root):
    first = default_storage.save("attachments/key", ContentFile(b"first"))
    second = default_storage.save("attachments/key", ContentFile(b"second"))

    assert first == "attachments/key"
    assert second != first
    assert second.startswith("attachments/key")
    assert (media_root / first).read_bytes() == b"first"
    assert (media_root / second).read_bytes() == b"second"


@pytest.mark.parametrize("name", ["../escape.txt", "attachments/../../escape.txt", "/tmp/escape.txt"])
def test_a_name_that_would_leave_the_root_is_refused(media_root, name):
    with pytest.raises(SuspiciousFileOperation):
        default_storage.save(name, ContentFile(b"hostile"))

    assert not (media_root.parent / "escape.txt").exists()
    assert not os.path.exists("/tmp/escape.txt")


def test_a_directory_removed_behind_its_back_is_made_again(media_root):
    default_storage.save("raw/2026/12/01/a.eml", ContentFile(b"a"))
    shutil.rmtree(media_root / "raw")

    name = default_storage.save("raw/2026/12/01/b.eml", ContentFile(b"b"))

    assert (media_root / name).read_bytes() == b"b"


def test_other_names_and_contents_are_saved_as_filesystemstorage_saves_them(media_root, tmp_path):
    source = tmp_path / "upload.bin"
    source.write_bytes(b"from disk")
    with source.open("rb") as handle:
        from_disk = default_storage.save("uploads/upload.bin", File(handle))
    text = default_storage.save("notes/a note é.txt", ContentFile("some text"))

    assert (media_root / from_disk).read_bytes() == b"from disk"
    assert (media_root / text).read_text() == "some text"
    assert text.startswith("notes/")
