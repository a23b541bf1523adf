"""The loop guard: one decision for every automatic message, refusals recorded with their reason."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

from conversations.incoming.ingest import ingest_email
from conversations.models import AutomaticReplyRefusal, Direction, Message
from conversations.outgoing.acknowledgements import acknowledge_new_conversation
from conversations.outgoing.loopguard import (
    ACKNOWLEDGEMENT,
    AI_REPLY,
    Incoming,
    Recent,
    decide,
    may_send_automatic,
)
from conversations.tokens import make_message_id
from tests import factories
from tests.outgoing.conftest import wait_until

PERSON = Incoming(sender="ann@example.test", recipient="ann@example.test", automatic_reason="",
                  message_id="p1@example.test", referenced_ids=(), subject="Printer on fire",
                  text="Hello, my printer is on fire.")
RECENT = Recent(own_addresses=frozenset({"support@switchboard.test", "replies@switchboard.test"}),
                message_id_domain="switchboard.test", message_id_domain_is_ours_alone=False)
SIGNED_ID = make_message_id(uuid.uuid4(), "mail.elsewhere.test")


def case(incoming: dict | None = None, recent: dict | None = None, kind: str = ACKNOWLEDGEMENT) -> tuple:
    return dataclasses.replace(PERSON, **(incoming or {})), dataclasses.replace(RECENT, **(recent or {})), kind


# (incoming, recent, kind) → the rule that refuses, "" when allowed.
CASES = {
    "a person's new mail": (case(), ""),
    "flagged automatic by ingest": (case({"automatic_reason": "Auto-Submitted: auto-replied"}), "automatic"),
    "an acknowledgement the sender asked not to get": (case({"suppressed_auto_replies": "All"}), "asked_for_none"),
    "an AI reply the sender asked no auto-reply of": (case({"suppressed_auto_replies": "All"}, kind=AI_REPLY), ""),
    "no address to write to": (case({"recipient": ""}), "no_recipient"),
    "an unparseable sender's placeholder": (case({"recipient": "unknown-sender@switchboard.invalid"}),
                                            "no_recipient"),
    "from our own inbox": (case({"sender": "Support@Switchboard.test"}), "own_address"),
    "to our own Reply-To address": (case({"recipient": "replies@switchboard.test"}), "own_address"),
    "to noreply@": (case({"recipient": "noreply@shop.test"}), "no_reader"),
    "to no-reply+tag@": (case({"recipient": "no-reply+orders@shop.test"}), "no_reader"),
    "to do-not-reply@": (case({"recipient": "do-not-reply@shop.test"}), "no_reader"),
    "to postmaster@": (case({"recipient": "postmaster@shop.test"}), "no_reader"),
    "to mailer-daemon@": (case({"recipient": "MAILER-DAEMON@shop.test"}), "no_reader"),
    "to bounces@": (case({"recipient": "bounces@lists.test"}), "no_reader"),
    "a web form: from noreply@, the customer in Reply-To": (case({"sender": "noreply@forms.test"}), ""),
    "to someone whose name only starts like a robot": (case({"recipient": "norah@example.test"}), ""),
    "our signed Message-ID, at any domain": (case({"message_id": SIGNED_ID}), "own_message_id"),
    "our Message-ID prefix at the inbox's domain": (case({"message_id": "sb.forged.1@switchboard.test"}),
                                                   "own_message_id"),
    "any id at our own MESSAGE_ID_DOMAIN": (case({"message_id": "abc@ids.switchboard.test"},
                                                 {"message_id_domain": "ids.switchboard.test",
                                                  "message_id_domain_is_ours_alone": True}), "own_message_id"),
    "staff of the inbox's own company": (case({"message_id": "CAB123@switchboard.test"}), ""),
    "an acknowledgement for mail answering ours": (case({"referenced_ids": ("x@example.test", SIGNED_ID)}),
                                                  "answers_ours"),
    "an AI reply to a customer answering our reply": (case({"referenced_ids": (SIGNED_ID,)}, kind=AI_REPLY), ""),
    "an AI reply to mail answering our acknowledgement": (
        case({"referenced_ids": (SIGNED_ID,)}, {"answered_kinds": frozenset({ACKNOWLEDGEMENT})}, kind=AI_REPLY),
        "answers_automatic"),
    "a subject grown twice by an autoresponder": (
        case({"subject": "Automated Response: Re: Automated Response: Re: Order 42"},
             {"earlier_subjects": ("Automated Response: Re: Order 42", "Something else", "Order 42")}),
        "growing_subject"),
    "a subject grown once": (case({"subject": "Automated Response: Re: Order 42"},
                                  {"earlier_subjects": ("Order 42",)}), ""),
    "stacked reply prefixes of any case and language": (
        case({"subject": "RE: AW: Printer"}, {"earlier_subjects": ("aw: printer", "Printer")}), "growing_subject"),
    "a customer's thread keeps one Re:": (
        case({"subject": "Re: Printer"}, {"earlier_subjects": ("Re: Printer", "Re: Printer", "Printer")}), ""),
    "a forward of a thread is no autoresponder's prefix": (
        case({"subject": "Fwd: Re: Printer"}, {"earlier_subjects": ("Re: Printer", "Printer")}), ""),
    "a longer subject that merely ends alike": (
        case({"subject": "Urgent: printer"}, {"earlier_subjects": ("printer", "Re: printer")}), ""),
    "a body the inbox got twice before": (
        case({"text": "We are away.\n> quoted\n"}, {"earlier_texts": ("we  are AWAY.", "Other", "We are away.")}),
        "repeated_body"),
    "a body the inbox got once before": (case(recent={"earlier_texts": (PERSON.text, "Other")}), ""),
    "empty bodies are no repetition": (case({"text": ""}, {"earlier_texts": ("", "", "")}), ""),
    "an automatic message already in this conversation today": (case(recent={"to_conversation_today": 1}),
                                                                "conversation_cap"),
    "an automatic message already to this address today": (case(recent={"to_recipient_today": 1}),
                                                           "recipient_cap"),
    "the inbox's hourly cap reached": (case(recent={"from_inbox_last_hour": 50, "inbox_hourly_cap": 50}),
                                       "inbox_cap"),
    "one below the inbox's hourly cap": (case(recent={"from_inbox_last_hour": 49, "inbox_hourly_cap": 50}), ""),
}


@pytest.mark.parametrize(("given", "rule"), CASES.values(), ids=CASES.keys())
def test_the_decision(given, rule):
    decision = decide(*given)

    assert decision.rule == rule
    assert decision.allowed is (rule == "")
    assert bool(decision.reason) is (rule != "")


def test_a_refusal_says_why_in_plain_words():
    decision = decide(*case({"automatic_reason": "Precedence: bulk"}))
    assert decision.reason == "automatic mail (Precedence: bulk)"
    decision = decide(*case(recent={"from_inbox_last_hour": 7, "inbox_hourly_cap": 7}))
    assert decision.reason == "the inbox sent 7 automatic messages in the last hour (at most 7)"


# ---------------------------------------------------------------------------
# With the database: caps, records, the lock
# ---------------------------------------------------------------------------
def _mail(sender: str, subject: str, message_id: str, body: str = "Hello, my printer is on fire.", *extra: str
          ) -> bytes:
    headers = [f"From: {sender}", "To: support@switchboard.test", f"Subject: {subject}",
               f"Message-ID: <{message_id}>", "Date: Sat, 21 Nov 2026 10:00:00 +0000", *extra]
    return ("\r\n".join(headers) + f"\r\n\r\n{body}\r\n").encode()


@pytest.fixture
def inbox(db, people):
    return factories.InboxFactory(address="support@switchboard.test", auto_acknowledge=True,
                                  department=people.department_a)


def _ack(inbox, sender: str, subject: str, n: int, body: str | None = None) -> str:
    incoming = ingest_email(inbox, _mail(sender, subject, f"m{n}@example.test", body or f"Question number {n}"))
    return acknowledge_new_conversation(incoming.message.pk).reason


def _refusals() -> list[tuple[str, str]]:
    return list(AutomaticReplyRefusal.objects.order_by("id").values_list("kind", "rule"))


def test_one_automatic_message_per_conversation_a_day(inbox):
    first = ingest_email(inbox, _mail("ann@example.test", "Printer", "p1@example.test"))
    assert acknowledge_new_conversation(first.message.pk).reason == "sent"
    follow_up = ingest_email(inbox, _mail("ann@example.test", "Re: Printer", "p2@example.test", "More",
                                          "In-Reply-To: <p1@example.test>"))
    assert follow_up.message.conversation_id == first.message.conversation_id

    with transaction.atomic():
        refused = may_send_automatic(follow_up.message.conversation, follow_up.message, AI_REPLY)
    Message.objects.filter(direction=Direction.OUT).update(created_at=timezone.now() - dt.timedelta(hours=25))
    with transaction.atomic():
        next_day = may_send_automatic(follow_up.message.conversation, follow_up.message, "other_kind")

    assert (refused.allowed, refused.rule) == (False, "conversation_cap")
    assert next_day.allowed
    assert _refusals() == [(AI_REPLY, "conversation_cap")]


def test_one_automatic_message_per_sender_a_day_across_conversations(inbox):
    assert _ack(inbox, "ann@example.test", "Printer", 1) == "sent"
    assert _ack(inbox, "Ann@Example.test", "Scanner", 2) == "an automatic message went to ann@example.test in the " \
                                                            "last 24 hours"
    assert _ack(inbox, "bob@example.test", "Scanner", 3) == "sent"
    assert _refusals() == [(ACKNOWLEDGEMENT, "recipient_cap")]


def test_the_inbox_hourly_cap_holds_for_new_senders_and_new_conversations(inbox, settings):
    settings.AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR = 3
    reasons = [_ack(inbox, f"person{n}@example{n}.test", f"Topic {n}", n) for n in range(5)]

    assert reasons[:3] == ["sent"] * 3
    assert reasons[3:] == ["the inbox sent 3 automatic messages in the last hour (at most 3)"] * 2
    assert Message.objects.filter(direction=Direction.OUT, automatic_reason=ACKNOWLEDGEMENT).count() == 3
    # An hour later the inbox acknowledges again.
    Message.objects.filter(direction=Direction.OUT).update(created_at=timezone.now() - dt.timedelta(minutes=61))
    assert _ack(inbox, "late@example.test", "Topic late", 9) == "sent"


def test_the_hourly_cap_is_per_inbox(inbox, settings, people):
    settings.AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR = 1
    other = factories.InboxFactory(address="sales@switchboard.test", auto_acknowledge=True,
                                   department=people.department_a)
    assert _ack(inbox, "ann@example.test", "One", 1) == "sent"
    assert _ack(other, "bob@example.test", "Two", 2) == "sent"
    assert _ack(inbox, "cid@example.test", "Three", 3).startswith("the inbox sent 1 automatic")


def test_a_growing_subject_across_new_conversations_is_refused(inbox):
    subjects = ["Order 42", "Automated Response: Re: Order 42",
                "Automated Response: Re: Automated Response: Re: Order 42"]
    reasons = [_ack(inbox, f"robot{n}@responder{n}.test", subject, n) for n, subject in enumerate(subjects)]

    assert reasons[:2] == ["sent", "sent"]
    assert reasons[2].startswith("its subject keeps growing by reply prefixes")
    assert _refusals() == [(ACKNOWLEDGEMENT, "growing_subject")]


def test_a_repeated_body_across_new_conversations_is_refused(inbox):
    body = "Thank you for your message. This mailbox is not monitored."
    reasons = [_ack(inbox, f"robot{n}@responder{n}.test", f"Ticket {n * 7919}", n, body) for n in range(4)]

    assert reasons[:2] == ["sent", "sent"]
    assert reasons[2:] == ["the inbox got the same text 2 times lately", "the inbox got the same text 3 times lately"]
    assert _refusals() == [(ACKNOWLEDGEMENT, "repeated_body")] * 2


def test_mail_with_our_own_message_id_is_not_acknowledged(inbox):
    ours = make_message_id(uuid.uuid4(), "switchboard.test")
    incoming = ingest_email(inbox, _mail("ann@example.test", "Copy", ours))

    result = acknowledge_new_conversation(incoming.message.pk)

    assert result.message is None
    assert "our own Message-ID" in result.reason  # flagged by ingest, or by the guard itself
    assert not Message.objects.filter(direction=Direction.OUT).exists()


def test_a_refusal_is_recorded_once_when_the_task_runs_twice(inbox):
    incoming = ingest_email(inbox, _mail("robot@example.test", "Report", "r1@example.test", "x",
                                         "Auto-Submitted: auto-generated"))

    first = acknowledge_new_conversation(incoming.message.pk)
    again = acknowledge_new_conversation(incoming.message.pk)

    assert first.reason == again.reason == "automatic mail (Auto-Submitted: auto-generated)"
    [refusal] = AutomaticReplyRefusal.objects.all()
    assert (refusal.inbox, refusal.conversation, refusal.message) == (
        inbox, incoming.message.conversation, incoming.message)
    assert (refusal.kind, refusal.rule, refusal.reason) == (ACKNOWLEDGEMENT, "automatic", first.reason)


@pytest.mark.django_db(transaction=True)
def test_the_guard_refuses_to_decide_outside_the_transaction_that_queues(inbox):
    incoming = ingest_email(inbox, _mail("ann@example.test", "Printer", "p1@example.test"))
    with pytest.raises(RuntimeError, match="in the transaction that queues"):
        may_send_automatic(incoming.message.conversation, incoming.message, AI_REPLY)


def test_managers_read_refusals_in_the_admin_and_cannot_change_them(inbox, people, client):
    incoming = ingest_email(inbox, _mail("noreply@shop.test", "Your order", "o1@shop.test"))
    acknowledge_new_conversation(incoming.message.pk)
    refusal = AutomaticReplyRefusal.objects.get()
    client.force_login(people.manager)

    listing = client.get("/admin/conversations/automaticreplyrefusal/")
    detail = client.get(f"/admin/conversations/automaticreplyrefusal/{refusal.pk}/change/")
    posted = client.post(f"/admin/conversations/automaticreplyrefusal/{refusal.pk}/change/", {"reason": "edited"})
    added = client.get("/admin/conversations/automaticreplyrefusal/add/")

    assert listing.status_code == 200
    assert "noreply@shop.test does not read replies" in listing.content.decode()
    assert detail.status_code == 200
    assert posted.status_code == 403
    assert added.status_code == 403
    refusal.refresh_from_db()
    assert refusal.reason == "noreply@shop.test does not read replies"


@pytest.mark.django_db(transaction=True)
def test_a_decision_waits_until_the_one_before_it_committed(smtp_server, inbox_for, settings,
                                                            celery_worker_factory):
    """Two workers decide at once: the inbox's row lock makes the second see the first's message."""
    settings.AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR = 1
    inbox = inbox_for(smtp_server, auto_acknowledge=True)
    first, second = (ingest_email(inbox, _mail(f"person{n}@example{n}.test", f"Topic {n}", f"t{n}@example.test",
                                               f"Body {n}")).message for n in range(2))
    deciding, results = threading.Event(), {}

    def first_worker() -> None:
        try:
            with transaction.atomic():  # the acknowledgement commits only when this block ends
                results["first"] = acknowledge_new_conversation(first.pk).reason
                deciding.set()
                time.sleep(1)
        finally:
            connection.close()

    thread = threading.Thread(target=first_worker)
    thread.start()
    assert deciding.wait(timeout=30)
    results["second"] = acknowledge_new_conversation(second.pk).reason
    thread.join()

    assert results == {"first": "sent", "second": "the inbox sent 1 automatic messages in the last hour (at most 1)"}
    # Ingest enqueued both acknowledgements too: run again, they find what was decided.
    celery_worker_factory(name="deliverer", AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR="1")
    wait_until(lambda: Message.objects.filter(direction=Direction.OUT, delivery_status="sent").exists(), timeout=60)
    time.sleep(1)
    assert [r.rcpt_tos for r in smtp_server.received] == [["person0@example0.test"]]
    assert AutomaticReplyRefusal.objects.get().message == second
