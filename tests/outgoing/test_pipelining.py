"""Pipelined SMTP (RFC 2920) where the server offers it, and the classic exchange where it does not:
the same recipients get the same bytes, and refusals read the same."""

from __future__ import annotations

import time

import pytest

from conversations.models import DeliveryStatus, Message
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from inboxes import smtp
from tests.servers.smtp import Behaviour

pytestmark = pytest.mark.django_db

BOTH_WAYS = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])


def _mime(text: str):
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "support@switchboard.test"
    message["To"] = "ann@example.test"
    message["Subject"] = "Dots"
    message.set_content(text)
    return message


@BOTH_WAYS
def test_lines_that_start_with_a_dot_arrive_intact(smtp_server_factory, inbox_for, pipelining):
    server = smtp_server_factory(offer_pipelining=pipelining)
    inbox = inbox_for(server)
    text = ".\n..two dots\n.end of a sentence\nlast line without newline"
    client_seen = []
    result = smtp.send(inbox, _mime(text), envelope_from=inbox.address, recipients=["ann@example.test"],
                       before_data=lambda: client_seen.append("before data"))

    assert result.reply.startswith("250")
    assert client_seen == ["before data"]
    [received] = server.wait_for(1)
    assert received.message.get_content().splitlines() == text.splitlines()
    assert (received.mail_from, received.rcpt_tos) == ("support@switchboard.test", ["ann@example.test"])


@BOTH_WAYS
def test_a_reply_with_a_refused_cc_reaches_the_others(smtp_server_factory, inbox_for, customer_thread, pipelining):
    server = smtp_server_factory(offer_pipelining=pipelining,
                                 behaviour=Behaviour(refuse={"gone@example.test": "550 5.1.1 Gone"}))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Hi all", cc=["gone@example.test", "bob@example.test"],
                          bcc=["boss@example.test"])

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SENT
    assert "gone@example.test: 550 5.1.1 Gone" in message.delivery_server_reply
    [received] = server.received
    assert received.rcpt_tos == ["ann@example.test", "bob@example.test", "boss@example.test"]
    assert "boss@example.test" not in received.data.decode()


@BOTH_WAYS
@pytest.mark.parametrize(("behaviour", "expected"), [
    (Behaviour(mail_reply="553 5.7.1 Sender not allowed"), "553 5.7.1 Sender not allowed"),
    (Behaviour(rcpt_reply="550 5.1.1 No such user"), "550 5.1.1 No such user"),
    (Behaviour(data_reply="554 5.6.0 Message rejected"), "554 5.6.0 Message rejected"),
    (Behaviour(data_reply="554-5.7.1 Spam suspected:\r\n554-5.7.1 see the link\r\n554 5.7.1 https://example.test/x"),
     "554 5.7.1 Spam suspected:\n5.7.1 see the link\n5.7.1 https://example.test/x"),
], ids=["sender", "every-recipient", "content", "multi-line"])
def test_a_refusal_fails_the_reply_with_the_servers_words_and_the_next_reply_still_goes_out(
        smtp_server_factory, inbox_for, customer_thread, pipelining, behaviour, expected):
    behaviour.fail_times = 1 if behaviour.data_reply else None
    server = smtp_server_factory(offer_pipelining=pipelining, behaviour=behaviour)
    conversation, _ = customer_thread(inbox_for(server))
    refused = queue_reply(conversation, text="First")

    delivery.deliver_and_drain(refused.pk)
    refused.refresh_from_db()
    assert refused.delivery_status == DeliveryStatus.FAILED
    assert expected in refused.delivery_last_error
    assert refused.data_sent_at is None or behaviour.data_reply  # only a refusal after the data had data

    # The kept connection was reset: the next reply, once the server takes mail again, goes out on it.
    server.behaviour = Behaviour()
    accepted = queue_reply(conversation, text="Second")
    delivery.deliver_and_drain(accepted.pk)
    accepted.refresh_from_db()
    assert accepted.delivery_status == DeliveryStatus.SENT
    [received] = server.wait_for(1)
    assert "Second" in received.message.get_body(("plain",)).get_content()
    assert received.rcpt_tos == ["ann@example.test"]


def test_a_4xx_to_the_sender_is_retried_not_failed(smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(behaviour=Behaviour(mail_reply="451 4.3.0 Try again later"))
    conversation, _ = customer_thread(inbox_for(server))
    message = queue_reply(conversation, text="Later")

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert message.next_attempt_at is not None
    assert "451 4.3.0 Try again later" in message.delivery_last_error
    assert message.data_sent_at is None
    assert server.received == []


@pytest.mark.parametrize("security", ["none", "ssl"])
@BOTH_WAYS
def test_work_left_for_meanwhile_runs_while_a_slow_server_thinks_and_before_the_data(
        smtp_server_factory, inbox_for, security, pipelining):
    server = smtp_server_factory(security=security, offer_pipelining=pipelining)
    inbox = inbox_for(server)
    smtp.send(inbox, _mime("warm-up"), envelope_from=inbox.address, recipients=["ann@example.test"], reuse=True)
    server.behaviour = Behaviour(delay_before_rcpt=0.5)
    seen = []
    started = time.monotonic()
    smtp.send(inbox, _mime("slow"), envelope_from=inbox.address, recipients=["ann@example.test"], reuse=True,
              before_data=lambda: seen.append(("before data", time.monotonic() - started)),
              meanwhile=lambda: seen.append(("meanwhile", time.monotonic() - started)))
    smtp.close_pool()

    assert [what for what, _ in seen] == ["meanwhile", "before data"]
    assert seen[0][1] < 0.4 <= seen[1][1]  # not after the server's answers
    assert len(server.wait_for(2)) == 2


# ---------------------------------------------------------------------------
# A drain sends the next reply's envelope right behind the current reply's data
# ---------------------------------------------------------------------------
def _drain_all(first):
    smtp.close_pool()
    outcomes = delivery.deliver_and_drain(first.pk)
    smtp.close_pool()
    return outcomes


def _received_ids(server):
    ids = [r.message["Message-ID"] for r in server.received]
    assert all(ids), "the server received a message without a Message-ID (an empty one?)"
    return ids


@BOTH_WAYS
def test_a_refusal_in_the_middle_of_a_drain_fails_that_reply_alone(
        smtp_server_factory, inbox_for, customer_thread, pipelining):
    server = smtp_server_factory(offer_pipelining=pipelining,
                                 behaviour=Behaviour(refuse={"gone@example.test": "550 5.1.1 Gone"}))
    conversation, _ = customer_thread(inbox_for(server))
    replies = [queue_reply(conversation, text=f"reply {n}") for n in range(5)]
    Message.objects.filter(pk=replies[2].pk).update(to=[{"name": "", "address": "gone@example.test"}])

    outcomes = _drain_all(replies[0])

    assert [outcomes[r.pk].status for r in replies] == [DeliveryStatus.SENT] * 2 + [DeliveryStatus.FAILED] + [
        DeliveryStatus.SENT] * 2
    assert sorted(_received_ids(server)) == sorted(f"<{r.message_id}>" for n, r in enumerate(replies) if n != 2)


@BOTH_WAYS
def test_content_refused_behind_which_the_next_envelope_went_out_costs_only_that_reply(
        smtp_server_factory, inbox_for, customer_thread, pipelining):
    server = smtp_server_factory(offer_pipelining=pipelining,
                                 behaviour=Behaviour(data_reply="554 5.6.0 Rejected", fail_times=1))
    conversation, _ = customer_thread(inbox_for(server))
    replies = [queue_reply(conversation, text=f"reply {n}") for n in range(3)]

    outcomes = _drain_all(replies[0])

    assert [outcomes[r.pk].status for r in replies] == [DeliveryStatus.FAILED] + [DeliveryStatus.SENT] * 2
    assert sorted(_received_ids(server)) == sorted(f"<{r.message_id}>" for r in replies[1:])


@BOTH_WAYS
def test_a_drain_that_stops_with_the_next_envelope_sent_delivers_no_empty_message(
        smtp_server_factory, inbox_for, customer_thread, settings, pipelining):
    settings.DELIVERY_DRAIN_MAX_MESSAGES = 3
    server = smtp_server_factory(offer_pipelining=pipelining)
    conversation, _ = customer_thread(inbox_for(server))
    replies = [queue_reply(conversation, text=f"reply {n}") for n in range(5)]

    first = delivery.deliver_and_drain(replies[0].pk)  # stops after three, the fourth's envelope sent
    time.sleep(0.5)
    assert len(server.received) == 3
    second = _drain_all(replies[3])

    assert [r.pk for r in replies] == sorted([*first, *second])
    assert {o.status for o in [*first.values(), *second.values()]} == {DeliveryStatus.SENT}
    assert sorted(_received_ids(server)) == sorted(f"<{r.message_id}>" for r in replies)


@BOTH_WAYS
def test_a_failure_just_before_the_data_sends_nothing_and_does_not_wait_for_the_server(
        smtp_server_factory, inbox_for, pipelining, settings):
    settings.SMTP_TIMEOUT = 20
    server = smtp_server_factory(offer_pipelining=pipelining)
    inbox = inbox_for(server)

    def database_down() -> None:
        raise RuntimeError("the database is down")

    started = time.monotonic()
    with pytest.raises(smtp.TransientError, match="the database is down"):
        smtp.send(inbox, _mime("never"), envelope_from=inbox.address, recipients=["ann@example.test"],
                  before_data=database_down, reuse=True)
    assert time.monotonic() - started < 5  # no QUIT sent into the data, no wait for its answer
    smtp.send(inbox, _mime("next"), envelope_from=inbox.address, recipients=["ann@example.test"], reuse=True)
    smtp.close_pool()
    [received] = server.wait_for(1)
    time.sleep(0.5)
    assert len(server.received) == 1
    assert received.message.get_content().strip() == "next"
