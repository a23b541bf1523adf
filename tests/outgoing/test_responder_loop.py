"""A rule-breaking autoresponder against our acknowledgements, through the real servers.

The responder answers every acknowledgement that reaches the SMTP server by putting a new
message into the inbox's Dovecot mailbox: from a new address each time, without Auto-Submitted
or any other mark, into a new conversation (no In-Reply-To), its subject "Automated Response: "
plus our subject. The inbox is polled here; a real worker acknowledges and delivers. Once, such
a responder exchanged 42 acknowledgements with us in 240 s.
"""

from __future__ import annotations

import datetime as dt
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import pytest

from conversations.incoming.polling import poll_inbox
from conversations.models import AutomaticReplyRefusal, DeliveryStatus, Direction, Message
from conversations.outgoing.loopguard import ACKNOWLEDGEMENT
from inboxes.models import Security
from tests import factories
from tests.outgoing.conftest import wait_until

MAX_ROUNDS = 40
MAX_SECONDS = 60
HOURLY_CAP = 5
BODY = "Thank you for your email. Your message has been received and will be processed."


@pytest.fixture
def responder_inbox(dovecot, mail_account, smtp_server, people, settings):
    """An acknowledging inbox that reads the test Dovecot and sends through the test SMTP server."""
    settings.MAIL_CA_FILE = str(dovecot.ca_file)
    return factories.InboxFactory(
        address="support@switchboard.test", department=people.department_a, auto_acknowledge=True,
        imap_host=dovecot.host, imap_port=dovecot.ports[Security.NONE], imap_security=Security.NONE,
        imap_username=mail_account.username, imap_secret=mail_account.password,
        import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), **smtp_server.inbox_settings())


def responder_mail(n: int, subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Order Desk <desk{n}@responder{n}.test>"
    message["To"] = "support@switchboard.test"
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain=f"responder{n}.test")
    message.set_content(body)
    return message.as_bytes(policy=SMTP)


def every_message_decided(inbox) -> bool:
    """Each incoming message has its acknowledgement sent, or a refusal recorded."""
    incoming = Message.objects.filter(inbox=inbox, direction=Direction.IN).values_list("pk", "conversation_id")
    acknowledged = set(Message.objects.filter(inbox=inbox, direction=Direction.OUT, automatic_reason=ACKNOWLEDGEMENT,
                                              delivery_status=DeliveryStatus.SENT)
                       .values_list("conversation_id", flat=True))
    refused = set(AutomaticReplyRefusal.objects.filter(inbox=inbox).values_list("message_id", flat=True))
    return bool(incoming) and all(conversation in acknowledged or pk in refused for pk, conversation in incoming)


def run_responder(inbox, mail_account, smtp_server, *, subject_of, body_of) -> int:
    """Play the responder until no acknowledgement comes back (or the bounds); return the rounds."""
    mail_account.append([responder_mail(0, "Order 42", body_of(0))])
    answered, deadline = 0, time.monotonic() + MAX_SECONDS
    for round_number in range(1, MAX_ROUNDS + 1):
        assert poll_inbox(inbox.pk).error == ""
        wait_until(lambda: every_message_decided(inbox), timeout=30)
        acknowledgements = smtp_server.received[answered:]
        if not acknowledgements or time.monotonic() > deadline:
            return round_number
        mail_account.append([responder_mail(answered + i + 1, subject_of(str(received.message["Subject"])),
                                            body_of(answered + i + 1))
                             for i, received in enumerate(acknowledgements)])
        answered += len(acknowledgements)
    return MAX_ROUNDS


def growing(subject: str) -> str:
    return f"Automated Response: {subject}"


CASES = {
    # Same body each time: the repeated body and the growing subject both stop it.
    "same body, growing subject": (growing, lambda n: BODY, 3),
    # A ticket number in every body: the growing subject still stops it.
    "new body, growing subject": (growing, lambda n: f"{BODY}\nYour ticket: {1000 + n * 7}", 3),
    # Neither repeats: only the inbox's hourly cap is left, and it holds.
    "new body, one subject": (lambda subject: "Automated Response: Order 42",
                              lambda n: f"{BODY}\nYour ticket: {1000 + n * 7}", HOURLY_CAP),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("subject_of", "body_of", "at_most"), CASES.values(), ids=CASES.keys())
def test_a_rule_breaking_responder_gets_a_handful_of_acknowledgements_then_none(
        responder_inbox, mail_account, smtp_server, celery_worker_factory, subject_of, body_of, at_most):
    celery_worker_factory(name="responder", AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR=str(HOURLY_CAP))
    started = time.monotonic()

    rounds = run_responder(responder_inbox, mail_account, smtp_server, subject_of=subject_of, body_of=body_of)
    sent = len(smtp_server.received)
    assert 1 <= sent <= at_most, f"{sent} acknowledgements in {rounds} rounds"
    # Then none: the responder answers our last acknowledgement again from three more addresses.
    last = str(smtp_server.received[-1].message["Subject"])
    mail_account.append([responder_mail(100 + n, subject_of(last), body_of(100 + n)) for n in range(3)])
    assert poll_inbox(responder_inbox.pk).error == ""
    wait_until(lambda: every_message_decided(responder_inbox), timeout=30)  # sent, or refused

    assert len(smtp_server.received) == sent
    refusals = list(AutomaticReplyRefusal.objects.filter(inbox=responder_inbox).values_list("rule", "reason"))
    incoming = Message.objects.filter(inbox=responder_inbox, direction=Direction.IN)
    assert rounds < MAX_ROUNDS
    assert time.monotonic() - started < MAX_SECONDS + 30
    assert incoming.count() == sent + 4  # each acknowledgement answered, the last answer and three more refused
    assert incoming.values("conversation").distinct().count() == sent + 4  # a new conversation each time
    assert len(refusals) == 4
    assert not incoming.filter(is_automatic=True).exists()  # no header told us
    assert all(reason for _, reason in refusals)
    expected_rules = {"inbox_cap"} if at_most == HOURLY_CAP else {"growing_subject", "repeated_body"}
    assert {rule for rule, _ in refusals} <= expected_rules
    assert all(received.message["Auto-Submitted"] == "auto-replied" for received in smtp_server.received)
