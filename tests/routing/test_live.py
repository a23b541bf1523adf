"""Live routing end to end: a real web server (uvicorn) holds the agents' sockets, a real Celery worker polls
the real Dovecot, ingests and routes, and events cross the real Redis channel layer between
them. The settings both processes share (grace, socket TTL, recheck, replay length) are short:
tests/routing/conftest.py's LIVE_SETTINGS."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid

import pytest
from django.contrib.sessions.models import Session

from agents.models import Agent, Presence
from config.redis import get_redis
from conversations import actions
from conversations.live import events
from conversations.models import Conversation
from conversations.tasks import polling as polling_tasks
from conversations.tasks import routing as routing_tasks
from departments.models import RoutingStrategy
from inboxes.models import Security
from tests import factories
from tests.routing.conftest import (
    LIVE_SETTINGS,
    online_agent,
    receive_all,
    receive_until,
    send_json,
    session_cookie,
    start_web,
    stop_web,
    waiting_conversation,
)
from tests.servers.asgi import WebSocketClosed

GRACE = int(LIVE_SETTINGS["PRESENCE_GRACE_SECONDS"])
SOCKET_TTL = int(LIVE_SETTINGS["PRESENCE_SOCKET_TTL_SECONDS"])
REPLAY_LENGTH = int(LIVE_SETTINGS["EVENT_REPLAY_LENGTH"])


def connect(server, who, *, resume: dict | None = None):
    """A console tab of `who` (an agent or a user): signed in, past "hello", resumed from
    `resume` (nothing seen: {})."""
    user = who.user if isinstance(who, Agent) else who
    socket = server.websocket("/ws/console/", cookie=session_cookie(user))
    hello = socket.receive_json(timeout=10)
    assert hello is not None
    assert hello["event"] == "hello", hello
    send_json(socket, {"type": "resume", "seq": resume or {}})
    return socket


def presence_of(agent) -> str:
    return Agent.objects.values_list("presence", flat=True).get(pk=agent.pk)


def wait_until(read, done, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s; last value {value!r}")
        time.sleep(interval)
        value = read()
    return value


def about(messages: list[dict], conversation) -> list[dict]:
    """The messages that name this conversation."""
    public_id = str(conversation.public_id)
    return [m for m in messages if m.get("payload", {}).get("conversation") == public_id]


def email(subject: str, sender: str = "carol@customer.example") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: support@switchboard.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4()}@customer.example>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nMy order has not arrived.\r\n").encode()


def test_an_email_polled_by_the_worker_reaches_its_departments_agents_only_and_is_assigned_with_its_reason(
        web, routing_worker, dovecot, mail_account):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.ROUND_ROBIN)
    billing = factories.DepartmentFactory(name="Billing")
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    bob = online_agent(support, "bob", presence=Presence.OFFLINE)
    stranger = online_agent(billing, "stranger", presence=Presence.OFFLINE)
    inbox = factories.InboxFactory(
        department=support, imap_host=dovecot.host, imap_port=dovecot.ports[Security.NONE],
        imap_security=Security.NONE, imap_username=mail_account.username, imap_secret=mail_account.password,
        import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    sockets = {agent.name: connect(web, agent) for agent in (alice, bob, stranger)}
    for agent in (alice, bob, stranger):  # opening the console brought them online
        wait_until(lambda agent=agent: presence_of(agent), lambda p: p == Presence.ONLINE)

    mail_account.append([email("Where is my parcel?")])
    polling_tasks.poll_inbox.delay(inbox.pk)

    heard = {name: receive_until(sockets[name], lambda m: m["event"] == events.CONVERSATION_ASSIGNED)
             for name in ("Alice", "Bob")}
    conversation = Conversation.objects.select_related("assignee").get(inbox=inbox)
    assert conversation.subject == "Where is my parcel?"
    assert conversation.assignee in (alice, bob)
    assert conversation.routing_reason
    for messages in heard.values():
        kinds = [m["event"] for m in about(messages, conversation)]
        assert events.CONVERSATION_CREATED in kinds
        assert kinds.index(events.CONVERSATION_CREATED) < kinds.index(events.CONVERSATION_ASSIGNED)
        assigned = messages[-1]["payload"]
        assert assigned["assignee"] == str(conversation.assignee.public_id)
        assert assigned["reason"] == conversation.routing_reason
        assert str(support.public_id) in messages[-1]["seq"]
    assert about(receive_all(sockets["Stranger"], 2.0), conversation) == []


def test_a_stranger_hears_none_of_100_events_and_a_removed_agent_stops_hearing_within_5_seconds(web):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.MANUAL)
    billing = factories.DepartmentFactory(name="Billing", routing_strategy=RoutingStrategy.MANUAL)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    alice.departments.add(billing)
    stranger = online_agent(billing, "stranger", presence=Presence.OFFLINE)
    conversation = factories.ConversationFactory(inbox__department=support, subject="Start")
    billing_conversation = factories.ConversationFactory(inbox__department=billing, subject="Start")
    alice_socket, stranger_socket = connect(web, alice), connect(web, stranger)
    receive_all(alice_socket, 1.0)  # presence notices from opening the consoles
    receive_all(stranger_socket, 0.1)

    for number in range(100):  # published from this process, as a worker would
        actions.set_subject(conversation, f"Subject {number}", by=None)
    events.flush()

    heard = receive_until(alice_socket, lambda m: m["payload"].get("subject") == "Subject 99")
    assert [m["payload"]["subject"] for m in about(heard, conversation)] == [f"Subject {n}" for n in range(100)]
    assert about(receive_all(stranger_socket, 2.0), conversation) == []

    alice.departments.remove(support)  # a manager takes her off Support in the admin
    removed_at, published = time.monotonic(), []
    heard = []
    while (since := time.monotonic() - removed_at) < 7.0:
        actions.set_subject(conversation, f"After {since:.2f}", by=None)
        published.append(since)
        heard += about(receive_all(alice_socket, 0.2), conversation)
    heard += about(receive_all(alice_socket, 1.0), conversation)
    heard_at = [float(m["payload"]["subject"].split()[1]) for m in heard]
    assert all(at < 5.0 for at in heard_at), f"heard Support's events published {heard_at} s after the removal"
    assert len(published) > 20

    # Still connected, still in Billing: her other department's events reach her.
    actions.set_subject(billing_conversation, "Billing still heard", by=None)
    events.flush()
    assert about(receive_until(alice_socket, lambda m: m["payload"].get("subject") == "Billing still heard"),
                 billing_conversation)


@pytest.mark.parametrize("how", ["deactivated", "signed out elsewhere"])
def test_a_deactivated_or_signed_out_agents_socket_is_closed_within_5_seconds(web, how):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.MANUAL)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    conversation = factories.ConversationFactory(inbox__department=support)
    socket = connect(web, alice)
    receive_all(socket, 0.5)

    if how == "deactivated":
        alice.user.is_active = False
        alice.user.save(update_fields=["is_active"])
    else:
        Session.objects.all().delete()  # "sign out everywhere" ends the session the socket holds
    cut_at = time.monotonic()

    def keep_talking() -> None:
        while time.monotonic() - cut_at < 8.0:
            actions.set_subject(conversation, f"Heard {time.monotonic() - cut_at:.2f}", by=None)
            for message in receive_all(socket, 0.2):
                if message["event"] == events.CONVERSATION_UPDATED:
                    assert float(message["payload"]["subject"].split()[1]) < 5.0

    with pytest.raises(WebSocketClosed) as closed:
        keep_talking()
    assert time.monotonic() - cut_at < 5.5
    assert closed.value.code == 4403


def test_a_client_that_reconnects_gets_exactly_what_it_missed_in_order_or_refetch_after_too_long(web):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.MANUAL)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    conversation = factories.ConversationFactory(inbox__department=support, subject="Start")
    key = str(support.public_id)
    socket = connect(web, alice)
    wait_until(lambda: presence_of(alice), lambda p: p == Presence.ONLINE)
    receive_all(socket, 0.5)  # her own arrival online
    actions.set_subject(conversation, "Seen", by=None)
    seen = receive_until(socket, lambda m: m["payload"].get("subject") == "Seen")[-1]["seq"]

    socket.close()  # the train enters a tunnel
    for number in range(5):
        actions.set_subject(conversation, f"Missed {number}", by=None)
    events.flush()
    socket = connect(web, alice, resume=seen)
    replayed = receive_all(socket, 2.0)
    assert [m["payload"]["subject"] for m in replayed] == [f"Missed {n}" for n in range(5)]
    assert [m["seq"][key] for m in replayed] == [seen[key] + n for n in range(1, 6)]
    last = replayed[-1]["seq"]

    actions.set_subject(conversation, "Live again", by=None)  # and the live stream goes on from there
    live = receive_until(socket, lambda m: m["payload"].get("subject") == "Live again")[-1]
    assert live["seq"][key] == last[key] + 1

    socket.close()  # away longer than the replay log reaches
    for number in range(REPLAY_LENGTH + 10):
        actions.set_subject(conversation, f"Long gone {number}", by=None)
    events.flush()
    socket = connect(web, alice, resume=live["seq"])
    after = receive_until(socket, lambda m: m["event"] == "refetch")
    assert after[-1]["payload"] == {"departments": [key]}
    assert about(after, conversation) == [], "a partial replay was sent before the refetch"


def lost_on_the_way(conversation, subject: str) -> int:
    """An event numbered and logged whose push never reached the web process (as while its
    pub/sub connection reconnects); returns its number."""
    message = {"type": events.CONVERSATION_UPDATED, "event": events.CONVERSATION_UPDATED,
               "payload": {"conversation": str(conversation.public_id), "subject": subject},
               "departments": [conversation.inbox.department_id], "agents": []}
    events.sequence([message])
    return message["seq"][str(conversation.inbox.department_id)]


def test_a_socket_catches_up_on_events_it_never_heard_from_the_replay_log(web):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.MANUAL)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    conversation = factories.ConversationFactory(inbox__department=support, subject="Start")
    key = str(support.public_id)
    socket = connect(web, alice)
    receive_all(socket, 1.0)  # her own arrival online

    # A push lost in the middle: the next event shows the skipped number.
    lost = lost_on_the_way(conversation, "Lost in the middle")
    actions.set_subject(conversation, "After it", by=None)
    heard = about(receive_all(socket, 3.0), conversation)
    assert sorted((m["seq"][key], m["payload"]["subject"]) for m in heard) == [
        (lost, "Lost in the middle"), (lost + 1, "After it")]

    # The last push lost: nothing comes after it, and the rechecks notice the counter moved.
    lost = lost_on_the_way(conversation, "Lost at the end")
    heard = about(receive_until(socket, lambda m: m["payload"].get("subject") == "Lost at the end", timeout=10),
                  conversation)
    assert [(m["seq"][key], m["payload"]["subject"]) for m in heard] == [(lost, "Lost at the end")]

    # A number the log never held (Redis failed between counting and logging): refetch.
    get_redis().incrby(f"switchboard:events:seq:{support.pk}", 1)
    actions.set_subject(conversation, "After the hole", by=None)
    heard = receive_until(socket, lambda m: m["event"] == "refetch", timeout=10)
    assert heard[-1]["payload"] == {"departments": [key]}
    assert [m["payload"]["subject"] for m in about(heard, conversation)] == ["After the hole"]
    assert about(receive_all(socket, 1.5), conversation) == [], "an event was sent twice"


def test_events_published_while_the_web_process_reconnects_to_redis_still_arrive_once(web):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.MANUAL)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    conversation = factories.ConversationFactory(inbox__department=support, subject="Start")
    socket = connect(web, alice)
    receive_all(socket, 1.0)

    killed = get_redis().client_kill_filter(_type="pubsub")  # every subscriber's connection, the web server's too
    assert killed >= 1
    for number in range(5):
        actions.set_subject(conversation, f"Meanwhile {number}", by=None)
    events.flush()
    heard = about(receive_until(socket, lambda m: m["payload"].get("subject") == "Meanwhile 4", timeout=10),
                  conversation)
    heard += about(receive_all(socket, 3.0), conversation)
    assert sorted(m["payload"]["subject"] for m in heard) == [f"Meanwhile {n}" for n in range(5)]

    actions.set_subject(conversation, "Back to normal", by=None)  # and the live stream goes on
    assert about(receive_until(socket, lambda m: m["payload"].get("subject") == "Back to normal"), conversation)


def test_a_page_reload_keeps_the_agents_presence_and_conversations(web, routing_worker):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.ROUND_ROBIN,
                                          return_on_offline=True, offline_grace_seconds=0)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    manager = factories.UserFactory(username="manager", is_staff=True)
    watcher = connect(web, manager)
    socket = connect(web, alice)
    wait_until(lambda: presence_of(alice), lambda p: p == Presence.ONLINE)
    conversation = waiting_conversation(factories.InboxFactory(department=support))
    actions.assign(conversation, alice, by=None, reason="set up by the test")
    receive_all(watcher, 1.0)

    socket.close()  # the reload: the old page's socket closes, the new page's opens
    time.sleep(0.3)
    socket = connect(web, alice)
    time.sleep(GRACE + SOCKET_TTL + 1)  # past the reconcile the closed socket scheduled
    routing_tasks.sweep_routing.delay().get(timeout=30)  # and the beat's sweep, as it would run

    assert presence_of(alice) == Presence.ONLINE
    conversation.refresh_from_db()
    assert conversation.assignee_id == alice.pk
    changes = [m for m in receive_all(watcher, 0.5) if m["event"] == events.PRESENCE]
    assert changes == [], f"the reload was seen as presence changes: {changes}"


def test_a_killed_web_process_agents_go_offline_after_the_grace_and_their_work_is_routed_on(
        web, routing_worker, tmp_path):
    support = factories.DepartmentFactory(name="Support", routing_strategy=RoutingStrategy.ROUND_ROBIN,
                                          return_on_offline=True, offline_grace_seconds=0)
    alice = online_agent(support, "alice", presence=Presence.OFFLINE)
    bob = online_agent(support, "bob", presence=Presence.OFFLINE)
    doomed = start_web(tmp_path / "doomed.log")
    try:
        connect(web, alice)
        connect(doomed, bob)
        for agent in (alice, bob):
            wait_until(lambda agent=agent: presence_of(agent), lambda p: p == Presence.ONLINE)
        conversation = waiting_conversation(factories.InboxFactory(department=support))
        actions.assign(conversation, bob, by=None, reason="set up by the test")

        os.killpg(doomed.process.pid, signal.SIGKILL)  # kill -9: no disconnect runs, nothing says goodbye
        doomed.process.wait(timeout=20)
        killed_at = time.monotonic()
        offline_after = None
        while time.monotonic() - killed_at < GRACE + SOCKET_TTL + 10:
            routing_tasks.sweep_routing.delay().get(timeout=30)  # the beat's sweep, run often
            if presence_of(bob) == Presence.OFFLINE:
                offline_after = time.monotonic() - killed_at
                break
            time.sleep(0.5)
    finally:
        stop_web(doomed, kill=True)

    assert offline_after is not None, "bob stayed online after his web process died"
    assert offline_after >= GRACE, f"offline {offline_after:.1f}s after the kill: no grace was given"
    assert presence_of(alice) == Presence.ONLINE
    conversation.refresh_from_db()
    assert conversation.assignee_id == alice.pk, conversation.routing_reason
