"""The connection test's last, optional step: a message from the inbox to itself, seen arriving through IMAP."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from inboxes import imap
from inboxes.connection_test.steps import Step, StepFailed, server_words
from inboxes.imap_errors import ImapError
from inboxes.models import Inbox

ARRIVAL_SECONDS = 60.0


def round_trip_step(inbox: Inbox, client: smtplib.SMTP | None, *, imap_ok: bool) -> Step:
    step = Step("Round trip: test message", ok=True, seconds=0.0)
    started = time.monotonic()
    try:
        if client is None or not imap_ok:
            raise StepFailed("Not sent: connecting to the servers failed above.", "Fix the failed step first.")
        message_id = _send(inbox, client)
        waited = _wait_for(inbox, message_id, started)
        step.detail = f"Sent from {inbox.address} to itself; it arrived in “{inbox.imap_folder}” after {waited:.1f} s."
        step.data["round_trip_seconds"] = round(waited, 3)
    except StepFailed as failure:
        step.ok, step.detail, step.advice = False, failure.detail, failure.advice
    finally:
        step.seconds = round(time.monotonic() - started, 3)
    return step


def _send(inbox: Inbox, client: smtplib.SMTP) -> str:
    message = EmailMessage()
    message["From"] = message["To"] = inbox.address
    message["Subject"] = "Switchboard connection test"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id = make_msgid("switchboard-test", inbox.domain or None)
    # Our own automatic mail: the loop guard and other programs leave it alone (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("This message was sent by Switchboard's connection test. It can be deleted.\n")
    try:
        client.send_message(message)
    except smtplib.SMTPException as error:
        raise StepFailed(f"The server refused the test message ({server_words(error)}).",
                         "The login works but sending as this address does not: check that the account may send "
                         "as the inbox's address.") from error
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return message_id


def _wait_for(inbox: Inbox, message_id: str, started: float) -> float:
    deadline = started + ARRIVAL_SECONDS
    try:
        with imap.connect(inbox) as session:
            session.select(inbox.imap_folder)
            while time.monotonic() < deadline:
                typ, data = session.client.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
                if typ == "OK" and data and data[0].split():
                    return time.monotonic() - started
                session.client.noop()
                time.sleep(0.5)
    except ImapError as error:
        raise StepFailed(f"Could not look for the test message: {error}", "") from error
    raise StepFailed(f"The test message was sent but did not arrive within {ARRIVAL_SECONDS:g} s.",
                     "Mail for the inbox's address may be delivered to another account or folder, or held by a "
                     "spam filter: check where it went.")
