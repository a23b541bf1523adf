"""Test an inbox's connections step by step, each step timed, each failure explained in plain words.

`connection_steps(inbox)` yields the steps as they finish (for a page that shows them as they
run); `run_connection_test(inbox)` returns them all as plain data (for the admin action, the
management command and the API). The test reads and changes nothing on the server, except the
optional test message, which it sends from the inbox to itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inboxes.connection_test.imap_test import imap_steps
from inboxes.connection_test.roundtrip import round_trip_step
from inboxes.connection_test.smtp_test import smtp_steps
from inboxes.connection_test.steps import Step
from inboxes.models import Inbox

__all__ = ["Step", "connection_steps", "run_connection_test"]


def connection_steps(inbox: Inbox, *, send_test_message: bool = False) -> Iterator[Step]:
    """IMAP's steps, then SMTP's (each half stops at its first failure), then the optional round trip."""
    imap_ok = True
    for step in imap_steps(inbox):
        imap_ok = imap_ok and step.ok
        yield step
    smtp_client = None
    for step, client in smtp_steps(inbox):
        smtp_client = client or smtp_client
        yield step
    if send_test_message:
        yield round_trip_step(inbox, smtp_client, imap_ok=imap_ok)
    elif smtp_client is not None:
        smtp_client.quit()


def run_connection_test(inbox: Inbox, *, send_test_message: bool = False) -> dict[str, Any]:
    """The whole test as plain data: {"ok": bool, "steps": [{name, ok, seconds, detail, advice, data}]}."""
    steps = [step.as_dict() for step in connection_steps(inbox, send_test_message=send_test_message)]
    return {"ok": all(step["ok"] for step in steps), "steps": steps}
