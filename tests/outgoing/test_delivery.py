"""A reply leaves through the inbox's SMTP server once, threaded, or says why it did not."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import DeliveryStatus, Priority
from conversations.outgoing import delivery
from conversations.outgoing.replies import AttachmentUpload, queue_reply
from conversations.tokens import conversation_from_message_id
from tests.servers.smtp import Behaviour

pytestmark = pytest.mark.django_db


def test_a_reply_reaches_the_server_threaded_with_both_bodies_and_attachments(
        smtp_server_factory, inbox_for, customer_thread, people):
    server = smtp_server_factory(security="starttls", username="support", password="pw")
    inbox = inbox_for(server, signature="Acme Support\nhttps://acme.test", reply_to="help@switchboard.test")
    conversation, _latest = customer_thread(inbox)

    message = queue_reply(conversation, author=people.agent_a, text="We are on it.\n<b>Stay calm</b>",
                          cc=["Boss <boss@example.test>"], bcc=["audit@example.test"], priority=Priority.HIGH,
                          attachments=[AttachmentUpload("steps.pdf", b"%PDF-1.4 steps", "application/pdf")])
    outcome = delivery.deliver_message(message.pk)

    [received] = server.wait_for(1)
    email = received.message
    message.refresh_from_db()
    assert outcome.status == message.delivery_status == DeliveryStatus.SENT
    assert message.delivery_server_reply.startswith("250 ")
    assert message.delivered_at is not None
    assert received.mail_from == "support@switchboard.test"
    assert sorted(received.rcpt_tos) == ["ann@example.test", "audit@example.test", "boss@example.test"]
    assert received.auth == "support"
    assert received.tls
    assert email["From"] == "Alice from Acme Support <support@switchboard.test>"
    assert email["To"] == "Ann Customer <ann@example.test>"
    assert email["Cc"] == "Boss <boss@example.test>"
    assert email["Bcc"] is None
    assert email["Reply-To"] == "help@switchboard.test"
    assert email["Subject"] == "Re: Printer on fire"
    assert email["Message-ID"] == f"<{message.message_id}>"
    assert conversation_from_message_id(email["Message-ID"]) == conversation.public_id
    assert email["In-Reply-To"] == "<second@example.test>"
    assert email["References"] == "<first@example.test> <second@example.test>"
    assert email["X-Priority"].startswith("2")
    assert email["Importance"] == "high"
    index = base64.b64decode(email["Thread-Index"])
    assert len(index) == 27
    assert index[6:22] == conversation.public_id.bytes
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert "We are on it." in text
    assert "-- \nAcme Support" in text.replace("\r\n", "\n")
    assert "&lt;b&gt;Stay calm&lt;/b&gt;" in html
    assert "<b>Stay calm" not in html
    [attachment] = list(email.iter_attachments())
    assert attachment.get_filename() == "steps.pdf"
    assert attachment.get_content() == b"%PDF-1.4 steps"


def test_a_second_delivery_finds_nothing_to_claim(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    message = queue_reply(conversation, text="Once.")

    assert delivery.deliver_message(message.pk).status == DeliveryStatus.SENT
    assert delivery.deliver_message(message.pk).status == "not claimed"
    assert len(smtp_server.received) == 1


def test_a_delivery_costs_four_queries(smtp_server, inbox_for, customer_thread, django_assert_num_queries):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    message = queue_reply(conversation, text="Cheap")

    # Load (with the inbox, the conversation's fields and whether it has attachments), claim,
    # data_sent_at just before the data, the outcome.
    with django_assert_num_queries(4):
        delivery.deliver_message(message.pk)


def test_a_5xx_fails_with_the_servers_words_and_says_so(
        smtp_server_factory, inbox_for, customer_thread, event_ear, django_capture_on_commit_callbacks):
    server = smtp_server_factory(behaviour=Behaviour(data_reply="554 5.7.1 Message rejected as spam"))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Buy now")

    with django_capture_on_commit_callbacks(execute=True):
        delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.FAILED
    assert "554 5.7.1 Message rejected as spam" in message.delivery_last_error
    assert message.delivery_server_reply == "554 5.7.1 Message rejected as spam"
    assert message.delivery_attempts == 1
    assert [(h["from"], h["to"]) for h in message.delivery_history] == [
        ("", "queued"), ("queued", "sending"), ("sending", "failed")]
    statuses = [e["payload"]["status"] for e in event_ear.receive_all() if e["type"] == "message.status"]
    assert statuses == ["sending", "failed"]
    assert server.received == []


def test_every_recipient_refused_is_permanent(smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(behaviour=Behaviour(rcpt_reply="550 5.1.1 No such user"))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Hello?")

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.FAILED
    assert "550 5.1.1 No such user" in message.delivery_last_error


def test_one_refused_recipient_does_not_stop_the_others(smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(behaviour=Behaviour(refuse={"gone@example.test": "550 5.1.1 Gone"}))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Hi all", cc=["gone@example.test"])

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENT
    assert "gone@example.test: 550 5.1.1 Gone" in message.delivery_server_reply
    assert server.received[0].rcpt_tos == ["ann@example.test"]


def test_a_4xx_is_retried_later_with_backoff(smtp_server_factory, inbox_for, customer_thread, settings):
    settings.DELIVERY_RETRY_BASE_SECONDS = 60
    server = smtp_server_factory(behaviour=Behaviour(rcpt_reply="451 4.7.1 Greylisted, try later", fail_times=2))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Patience")

    first = delivery.deliver_message(message.pk)
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert "451 4.7.1 Greylisted" in message.delivery_last_error
    assert 45 <= (message.next_attempt_at - timezone.now()).total_seconds() <= 75
    assert delivery.deliver_message(message.pk).status == "not claimed"  # not due yet

    _time_passes(message)
    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    assert 90 <= (message.next_attempt_at - timezone.now()).total_seconds() <= 150  # doubled

    _time_passes(message)
    assert delivery.deliver_message(message.pk).status == DeliveryStatus.SENT
    assert first.retry_at is not None
    assert len(server.received) == 1
    message.refresh_from_db()
    assert message.delivery_attempts == 3


def test_an_smtp_server_down_for_a_while_gets_the_message_exactly_once(smtp_server_factory, inbox_for,
                                                                       customer_thread):
    server = smtp_server_factory()
    conversation, _ = customer_thread(inbox_for(server))
    server.stop()
    message = queue_reply(conversation, text="Are you there?")

    for _ in range(3):
        delivery.deliver_message(message.pk)
        message.refresh_from_db()
        assert message.delivery_status == DeliveryStatus.QUEUED
        assert "Connection refused" in message.delivery_last_error or "ConnectionRefused" in message.delivery_last_error
        _time_passes(message)

    server.start()
    due = delivery.sweep_deliveries().due
    assert due == [message.pk]
    for message_id in due + due:  # a duplicate dispatch changes nothing
        delivery.deliver_message(message_id)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENT
    assert message.delivery_attempts == 4
    assert len(server.wait_for(1)) == 1


def test_transient_failures_give_up_after_the_limit(smtp_server_factory, inbox_for, customer_thread, settings):
    settings.DELIVERY_GIVE_UP_SECONDS = 3600
    server = smtp_server_factory()
    conversation, _ = customer_thread(inbox_for(server))
    server.stop()
    message = queue_reply(conversation, text="Anyone?")
    type(message).objects.filter(pk=message.pk).update(queued_at=timezone.now() - dt.timedelta(seconds=3590))

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.FAILED
    assert message.delivery_last_error.startswith("Gave up after 1 attempts")


def test_a_server_that_takes_the_data_and_hangs_leaves_it_uncertain_and_never_resends(
        smtp_server_factory, inbox_for, customer_thread, settings):
    settings.SMTP_TIMEOUT = 1
    server = smtp_server_factory(behaviour=Behaviour(hang_after_data=True))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Did you get this?")

    assert delivery.deliver_message(message.pk).status == DeliveryStatus.UNCERTAIN

    message.refresh_from_db()
    assert message.data_sent_at is not None
    assert "No answer after the message data was sent" in message.delivery_last_error
    sweep = delivery.sweep_deliveries(now=timezone.now() + dt.timedelta(days=1), stuck_after=dt.timedelta(0))
    assert message.pk not in sweep.due
    assert delivery.deliver_message(message.pk).status == "not claimed"
    assert len(server.received) == 1

    # The agent resends deliberately: the same Message-ID, so mail clients collapse the copies.
    server.behaviour.hang_after_data = False
    assert delivery.resend_message(message.pk, by="Alice")
    assert delivery.deliver_message(message.pk).status == DeliveryStatus.SENT
    first, second = server.wait_for(2)
    assert first.message["Message-ID"] == second.message["Message-ID"] == f"<{message.message_id}>"


def test_the_sweeper_requeues_stuck_messages_only_when_the_data_never_left(smtp_server, inbox_for,
                                                                           customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    never_sent = queue_reply(conversation, text="one")
    maybe_sent = queue_reply(conversation, text="two")
    long_ago = timezone.now() - dt.timedelta(hours=1)
    type(never_sent).objects.filter(pk=never_sent.pk).update(delivery_status="sending", sending_started_at=long_ago)
    type(never_sent).objects.filter(pk=maybe_sent.pk).update(delivery_status="sending", sending_started_at=long_ago,
                                                             data_sent_at=long_ago)

    sweep = delivery.sweep_deliveries()

    never_sent.refresh_from_db()
    maybe_sent.refresh_from_db()
    assert sweep.requeued == [never_sent.pk]
    assert sweep.uncertain == [maybe_sent.pk]
    assert never_sent.delivery_status == DeliveryStatus.QUEUED
    assert never_sent.pk in sweep.due
    assert maybe_sent.delivery_status == DeliveryStatus.UNCERTAIN
    assert maybe_sent.delivery_history[-1]["to"] == "uncertain"


def test_starttls_required_but_not_offered_fails_before_any_plaintext_login(smtp_server_factory, inbox_for,
                                                                             customer_thread):
    server = smtp_server_factory(security="starttls", offer_starttls=False, username="support", password="pw")
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Secret plans")

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert "does not offer STARTTLS" in message.delivery_last_error
    assert server.auth_attempts == []
    assert server.received == []


def test_an_untrusted_certificate_is_refused_unless_the_inbox_opts_out(smtp_server_factory, inbox_for,
                                                                       customer_thread, settings):
    settings.SMTP_CA_FILE = settings.MAIL_CA_FILE = ""  # only the system store: our test CA is unknown to it
    server = smtp_server_factory(security="ssl")
    inbox = inbox_for(server)
    conversation, _ = customer_thread(inbox)
    message = queue_reply(conversation, text="Hello")

    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert "CERTIFICATE_VERIFY_FAILED" in message.delivery_last_error

    type(inbox).objects.filter(pk=inbox.pk).update(smtp_verify_cert=False)
    _time_passes(message)
    assert delivery.deliver_message(message.pk).status == DeliveryStatus.SENT


def test_an_hourly_cap_delays_replies_without_dropping_them(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, max_sends_per_hour=2))
    messages = [queue_reply(conversation, text=f"reply {n}") for n in range(3)]

    outcomes = [delivery.deliver_message(m.pk).status for m in messages]

    assert outcomes == ["sent", "sent", "deferred"]
    last = messages[2]
    last.refresh_from_db()
    assert last.delivery_status == DeliveryStatus.QUEUED
    assert last.next_attempt_at > timezone.now() + dt.timedelta(minutes=59)
    assert len(smtp_server.received) == 2

    # An hour later the window has room again.
    type(last).objects.filter(pk__in=[m.pk for m in messages[:2]]).update(
        data_sent_at=timezone.now() - dt.timedelta(hours=2))
    _time_passes(last)
    assert delivery.deliver_message(last.pk).status == DeliveryStatus.SENT


def test_the_sweeper_leaves_a_delivery_in_progress_alone(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server))
    message = queue_reply(conversation, text="in flight")
    type(message).objects.filter(pk=message.pk).update(delivery_status="sending", sending_started_at=timezone.now())

    sweep = delivery.sweep_deliveries()

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENDING
    assert sweep.requeued == sweep.uncertain == sweep.due == []


def test_an_inactive_inbox_keeps_its_replies_queued(smtp_server, inbox_for, customer_thread):
    conversation, _ = customer_thread(inbox_for(smtp_server, active=False))
    message = queue_reply(conversation, text="wait for it")

    assert delivery.deliver_message(message.pk).status == "deferred"

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert message.next_attempt_at > timezone.now()
    assert smtp_server.received == []


def _time_passes(message) -> None:
    """The retry's moment has come (without the test waiting for it)."""
    type(message).objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))


@pytest.mark.django_db
def test_a_recipient_at_an_internationalised_domain_gets_the_reply_at_its_ascii_form(
        smtp_server, inbox_for, customer_thread):
    # Validation takes such an address; formataddr refuses non-ASCII, and a server without
    # SMTPUTF8 would too. IDNA spells the same domain in ASCII, which every server takes.
    conversation, _ = customer_thread(inbox_for(smtp_server))
    message = queue_reply(conversation, text="Grüße zurück.", to=["Jürgen <juergen@bücher.example>"],
                          bcc=["JUERGEN@xn--bcher-kva.example"])

    outcome = delivery.deliver_message(message.pk)

    assert outcome.status == DeliveryStatus.SENT
    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["juergen@xn--bcher-kva.example"]  # one recipient, however written
    assert received.message["To"].endswith("<juergen@xn--bcher-kva.example>")
    assert "Grüße zurück." in received.message.get_body(("plain",)).get_content()


def test_a_reply_is_composed_once_when_queued_and_exactly_those_bytes_leave_even_on_resend(
        smtp_server_factory, inbox_for, customer_thread):
    import hashlib

    server = smtp_server_factory(behaviour=Behaviour(data_reply="554 5.6.0 Not today", fail_times=1))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Composed once", bcc=["boss@example.test"],
                          attachments=[AttachmentUpload("notes.txt", b"hello", "text/plain")])

    message.refresh_from_db()
    with message.raw.open("rb") as handle:
        composed = handle.read()
    assert (message.raw_size, message.raw_sha256) == (len(composed), hashlib.sha256(composed).hexdigest())
    assert f"Message-ID: <{message.message_id}>".encode() in composed
    assert b"boss@example.test" not in composed  # Bcc never in the bytes that leave
    assert b"Composed once" in composed
    assert b"notes.txt" in composed

    delivery.deliver_message(message.pk)  # the server refuses the content once
    assert delivery.resend_message(message.pk, by="Ada")
    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENT
    [received] = server.wait_for(1)
    assert received.data == composed
    assert received.rcpt_tos == ["ann@example.test", "boss@example.test"]


def test_a_manager_downloads_a_reply_as_it_left(client, people, smtp_server, inbox_for, customer_thread):
    from django.urls import reverse

    conversation, _ = customer_thread(inbox_for(smtp_server))
    message = queue_reply(conversation, text="Keep a copy")
    delivery.deliver_message(message.pk)
    client.force_login(people.manager)

    page = client.get(reverse("admin:conversations_message_change", args=[message.pk]))
    url = reverse("admin:conversations_message_raw", args=[message.pk])
    response = client.get(url)

    assert url in page.content.decode()
    assert response["Content-Disposition"].startswith("attachment;")
    assert b"".join(response.streaming_content) == smtp_server.wait_for(1)[0].data
