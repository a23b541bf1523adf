"""A refused SMTP login is the inbox's problem, not the replies': they wait, queued, and leave in
order once the login works; the inbox's outgoing side shows the error. A port that speaks the
other TLS mode says so."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import DeliveryStatus
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply
from inboxes.models import ConnectionStatus, Inbox, OutgoingStatus

pytestmark = pytest.mark.django_db


def test_a_wrong_password_keeps_the_replies_queued_and_they_leave_in_order_once_it_is_fixed(
        smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(security="starttls", username="support", password="right")
    inbox = inbox_for(server, smtp_secret="wrong")
    conversation, _ = customer_thread(inbox)
    replies = [queue_reply(conversation, text=f"Reply number {n}") for n in range(3)]

    first = delivery.deliver_and_drain(replies[0].pk)[replies[0].pk]
    others = [delivery.deliver_message(reply.pk) for reply in replies[1:]]

    assert first.status == DeliveryStatus.QUEUED
    assert [outcome.status for outcome in others] == ["deferred", "deferred"]
    for reply in replies:
        reply.refresh_from_db()
        assert reply.delivery_status == DeliveryStatus.QUEUED
    inbox.refresh_from_db()
    assert inbox.outgoing_status == OutgoingStatus.ERROR
    assert "refused the login for 'support'" in inbox.outgoing_last_error
    assert "535" in inbox.outgoing_last_error
    assert inbox.outgoing_last_error_at is not None
    assert inbox.connection_status == ConnectionStatus.NOT_CONNECTED  # the incoming side is its own
    assert server.received == []

    inbox.smtp_secret = "right"
    inbox.save()
    due = delivery.sweep_deliveries().due
    assert due == [reply.pk for reply in replies]
    for message_id in due:  # what the tasks the sweeper sends do, in its order
        delivery.deliver_and_drain(message_id)

    received = server.wait_for(3)
    assert [r.message["Message-ID"] for r in received] == [f"<{reply.message_id}>" for reply in replies]
    inbox.refresh_from_db()
    assert (inbox.outgoing_status, inbox.outgoing_last_error) == (OutgoingStatus.OK, "")
    assert {reply.delivery_status for reply in type(replies[0]).objects.filter(pk__in=due)} == {DeliveryStatus.SENT}


def test_the_replies_wait_for_the_login_only_up_to_the_give_up_time(smtp_server_factory, inbox_for, customer_thread,
                                                                    settings):
    settings.DELIVERY_GIVE_UP_SECONDS = 60
    server = smtp_server_factory(username="support", password="right")
    conversation, _ = customer_thread(inbox_for(server, smtp_secret="wrong"))
    reply = queue_reply(conversation, text="Too late")
    type(reply).objects.filter(pk=reply.pk).update(queued_at=timezone.now() - dt.timedelta(minutes=2))

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.FAILED

    reply.refresh_from_db()
    assert reply.delivery_last_error.startswith("Gave up after 1 attempts:")
    assert "refused the login for 'support'" in reply.delivery_last_error


def test_a_refused_xoauth2_token_keeps_the_reply_queued_until_a_fresh_token_is_saved(
        smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(security="starttls", username="support@switchboard.test", password="unused",
                                 access_token="fresh-token")
    inbox = inbox_for(server, auth_method="google", smtp_username="support@switchboard.test",
                      oauth_access_token="expired-token")
    conversation, _ = customer_thread(inbox)
    reply = queue_reply(conversation, text="Hello")

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.QUEUED

    inbox.refresh_from_db()
    assert inbox.outgoing_status == OutgoingStatus.ERROR
    assert "refused the login for 'support@switchboard.test' (535" in inbox.outgoing_last_error
    assert server.auth_attempts == ["XOAUTH2:support@switchboard.test"]

    inbox.oauth_access_token = "fresh-token"
    inbox.save()
    [due] = delivery.sweep_deliveries().due
    assert delivery.deliver_message(due).status == DeliveryStatus.SENT

    [received] = server.wait_for(1)
    assert received.auth == "support@switchboard.test"
    inbox.refresh_from_db()
    assert inbox.outgoing_status == OutgoingStatus.OK


def test_a_server_that_wants_a_login_the_inbox_does_not_have_keeps_the_replies_queued(
        smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(username="support", password="right")
    inbox = inbox_for(server, smtp_username="", smtp_secret="")
    conversation, _ = customer_thread(inbox)
    reply = queue_reply(conversation, text="Hello")

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.QUEUED

    inbox.refresh_from_db()
    assert inbox.outgoing_status == OutgoingStatus.ERROR
    assert "requires a login" in inbox.outgoing_last_error
    assert "530" in inbox.outgoing_last_error


def test_saving_other_settings_does_not_hurry_a_refused_login(smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(username="support", password="right")
    inbox = inbox_for(server, smtp_secret="wrong")
    conversation, _ = customer_thread(inbox)
    reply = queue_reply(conversation, text="Hello")
    delivery.deliver_message(reply.pk)
    inbox.refresh_from_db()
    retry_at = inbox.outgoing_retry_at

    inbox.signature = "Kind regards"
    inbox.save()

    assert Inbox.objects.get(pk=inbox.pk).outgoing_retry_at == retry_at > timezone.now()
    assert delivery.sweep_deliveries().due == []


def test_starttls_against_an_implicit_tls_port_says_so(smtp_server_factory, inbox_for, customer_thread, settings):
    settings.SMTP_TIMEOUT = 2
    server = smtp_server_factory(security="ssl")
    conversation, _ = customer_thread(inbox_for(server, smtp_security="starttls"))
    reply = queue_reply(conversation, text="Hello")

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.QUEUED

    reply.refresh_from_db()
    assert "sent no greeting within 2 s" in reply.delivery_last_error
    assert "the port speaks implicit TLS" in reply.delivery_last_error
    assert "set to STARTTLS" in reply.delivery_last_error


def test_implicit_tls_against_a_starttls_port_says_so(smtp_server_factory, inbox_for, customer_thread):
    server = smtp_server_factory(security="starttls")
    conversation, _ = customer_thread(inbox_for(server, smtp_security="ssl"))
    reply = queue_reply(conversation, text="Hello")

    assert delivery.deliver_message(reply.pk).status == DeliveryStatus.QUEUED

    reply.refresh_from_db()
    assert "answered in plain text, not TLS" in reply.delivery_last_error
    assert "set to implicit TLS" in reply.delivery_last_error


def test_a_manager_sees_the_refused_login_on_the_inbox(client, people, smtp_server_factory, inbox_for,
                                                       customer_thread):
    from django.urls import reverse

    server = smtp_server_factory(username="support", password="right")
    inbox = inbox_for(server, smtp_secret="wrong")
    conversation, _ = customer_thread(inbox)
    delivery.deliver_message(queue_reply(conversation, text="Hello").pk)
    client.force_login(people.manager)

    listing = client.get(reverse("admin:inboxes_inbox_changelist")).content.decode()
    page = client.get(reverse("admin:inboxes_inbox_change", args=[inbox.pk])).content.decode()

    assert "Sending failed:" in listing
    assert "refused the login for &#x27;support&#x27;" in page
