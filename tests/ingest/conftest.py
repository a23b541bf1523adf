"""Fixtures for ingest tests: an inbox, the fixture mail, and the events agents would receive."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import factories

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def mail(name: str) -> bytes:
    """The bytes of a realistic message under tests/fixtures/mail/."""
    return (FIXTURES / "mail" / name).read_bytes()


@pytest.fixture
def inbox(db):
    return factories.InboxFactory(address="support@switchboard.test")
