"""python manage.py import_mail --inbox ADDRESS PATH: an mbox, a Maildir or .eml files through ingest."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.incoming.ingest import ingest_email
from inboxes.models import Inbox


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def iter_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for every message under `path`: a Maildir, an mbox, an .eml file or a
    folder of .eml files (sorted by name, so that a thread imports in order)."""
    if _is_maildir(path):
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.iterkeys()):
            yield f"maildir {key}", box.get_bytes(key)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*.eml") if p.is_file()):
            yield str(file.relative_to(path)), file.read_bytes()
    elif _is_mbox(path):
        box = mailbox.mbox(path, factory=None, create=False)
        for index, key in enumerate(box.iterkeys(), start=1):
            yield f"mbox #{index}", box.get_bytes(key)
    else:
        yield path.name, path.read_bytes()


class Command(BaseCommand):
    help = "Import an mbox, a Maildir, an .eml file or a folder of .eml files into an inbox."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--inbox", required=True, help="The inbox's email address.")
        parser.add_argument("--archive", action="store_true", help="Import as history: stored, not routed.")
        parser.add_argument("path", type=Path)

    def handle(self, *args: object, **options: object) -> None:
        address = str(options["inbox"])
        path = Path(str(options["path"]))
        inbox = Inbox.objects.filter(address__iexact=address).first()
        if inbox is None:
            raise CommandError(f"No inbox with the address {address}.")
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        counts = {"created": 0, "duplicates": 0, "quarantined": 0}
        for label, raw in iter_messages(path):
            result = ingest_email(inbox, raw, archive=bool(options["archive"]))
            if result.quarantined is not None:
                counts["quarantined"] += 1
                self.stdout.write(f"{label}: quarantined: {result.quarantined.error}")
            elif result.created:
                counts["created"] += 1
                self.stdout.write(f"{label}: created {result.message.subject!r}")
            else:
                counts["duplicates"] += 1
                self.stdout.write(f"{label}: duplicate of {result.message.message_id}")
        self.stdout.write(
            f"{counts['created']} created, {counts['duplicates']} duplicates, {counts['quarantined']} quarantined."
        )
