"""Every action validates, writes once, records who did it, and publishes exactly its events after commit."""

from __future__ import annotations

import pytest
from django.db import transaction

from agents.models import Presence
from conversations import actions
from conversations.live.events import MANAGERS_GROUP, agent_group, department_group
from conversations.models import ConversationActivity, Message, MessageKind
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(people):
    inbox = factories.InboxFactory(department=people.department_a)
    return factories.ConversationFactory(inbox=inbox, department=people.department_a)


def test_assigning_tells_the_department_and_the_assignee_once_and_records_who(people, conversation, tap):
    department, mine, stranger = (tap(department_group(people.department_a.pk)), tap(agent_group(people.agent_a.pk)),
                                  tap(department_group(people.department_b.pk)))

    actions.assign(conversation, people.agent_a, by=people.manager)

    assert department.take() == [("conversation.assigned", {
        "conversation": str(conversation.public_id), "assignee": str(people.agent_a.public_id),
        "reason": "assigned by maria"})]
    assert mine.types() == ["conversation.assigned"]
    assert stranger.types() == []
    conversation.refresh_from_db()
    assert conversation.assignee == people.agent_a
    assert conversation.routing_reason == "assigned by maria"
    activity = ConversationActivity.objects.get(conversation=conversation)
    assert (activity.verb, activity.actor_user, activity.actor_label) == ("assigned", people.manager, "maria")


def test_assigning_to_an_agent_of_another_department_is_refused_and_says_so(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    with pytest.raises(actions.ActionError, match="Bob is not in the Department A department") as error:
        actions.assign(conversation, people.agent_b, by=people.manager)

    assert error.value.field == "assignee"
    assert department.types() == []
    assert not ConversationActivity.objects.exists()


def test_a_claim_that_lost_the_race_raises_conflict_with_the_current_holder(people, conversation, tap):
    colleague = factories.AgentFactory(name="Carol", departments=[people.department_a])
    actions.assign(conversation, colleague, by=colleague, expected_assignee=None)
    department = tap(department_group(people.department_a.pk))

    with pytest.raises(actions.Conflict, match="just assigned to Carol") as lost:
        actions.assign(conversation, people.agent_a, by=people.agent_a, expected_assignee=None)

    assert lost.value.conversation.assignee == colleague
    assert department.types() == []


def test_unassigning_puts_it_in_the_queue(people, conversation, tap):
    actions.assign(conversation, people.agent_a, by=people.manager)
    department, mine = tap(department_group(people.department_a.pk)), tap(agent_group(people.agent_a.pk))

    actions.unassign(conversation, by=people.agent_a)

    assert department.types() == ["conversation.assigned", "conversation.queued"]
    assert mine.types() == ["conversation.assigned"]
    conversation.refresh_from_db()
    assert conversation.assignee is None
    assert conversation.queued_at is not None


def test_transferring_moves_it_to_the_other_departments_queue(people, conversation, tap):
    actions.assign(conversation, people.agent_a, by=people.manager)
    old, new = tap(department_group(people.department_a.pk)), tap(department_group(people.department_b.pk))

    actions.transfer(conversation, people.department_b, by=people.agent_a)

    assert old.types() == ["conversation.updated"]
    assert new.types() == ["conversation.created", "conversation.queued"]
    conversation.refresh_from_db()
    assert (conversation.department, conversation.assignee) == (people.department_b, None)
    assert "transferred from Department A by Alice" in conversation.routing_reason


def test_closing_and_reopening_each_send_one_update(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    actions.close(conversation, by=people.agent_a)
    actions.close(conversation, by=people.agent_a)  # already closed: nothing happens
    conversation.refresh_from_db()
    assert conversation.closed_at is not None
    actions.reopen(conversation, by=people.agent_a)

    assert department.take() == [
        ("conversation.updated", {"conversation": str(conversation.public_id), "status": "closed"}),
        ("conversation.updated", {"conversation": str(conversation.public_id), "status": "open"}),
    ]
    conversation.refresh_from_db()
    assert conversation.closed_at is None
    assert list(ConversationActivity.objects.values_list("verb", flat=True)) == ["closed", "reopened"]


def test_a_bad_status_or_priority_names_the_field_and_changes_nothing(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    with pytest.raises(actions.ActionError) as status:
        actions.set_status(conversation, "solved", by=people.agent_a)
    with pytest.raises(actions.ActionError) as priority:
        actions.set_priority(conversation, 9, by=people.agent_a)

    assert (status.value.field, priority.value.field) == ("status", "priority")
    assert department.types() == []


def test_priority_and_subject_changes_are_events(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    actions.set_priority(conversation, 3, by=people.agent_a)
    actions.set_subject(conversation, "  Printer\non fire ", by=people.agent_a)

    assert [payload for _kind, payload in department.take()] == [
        {"conversation": str(conversation.public_id), "priority": 3},
        {"conversation": str(conversation.public_id), "subject": "Printer on fire"},
    ]


def test_an_action_rolled_back_publishes_nothing(people, conversation, tap):
    department, managers = tap(department_group(people.department_a.pk)), tap(MANAGERS_GROUP)

    def fails_after_the_actions() -> None:
        with transaction.atomic():
            actions.close(conversation, by=people.agent_a)
            actions.assign(conversation, people.agent_a, by=people.agent_a)
            raise RuntimeError("the caller failed after the actions")

    with pytest.raises(RuntimeError):
        fails_after_the_actions()

    assert department.types() == []
    assert managers.types() == []
    conversation.refresh_from_db()
    assert conversation.status == "open"
    assert not ConversationActivity.objects.exists()


def test_events_wait_for_the_outer_transaction_to_commit(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    with transaction.atomic():
        actions.close(conversation, by=people.agent_a)
        assert department.types(wait=0.2) == []

    assert department.types() == ["conversation.updated"]


def test_a_note_is_stored_never_queued_and_announced(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))

    note = actions.add_note(conversation, "Customer called, see ticket 12", by=people.agent_a)

    assert (note.kind, note.delivery_status, note.author) == (MessageKind.NOTE, "", people.agent_a)
    assert department.types() == ["message.created"]
    with pytest.raises(actions.ActionError, match="needs some text"):
        actions.add_note(conversation, "   ", by=people.agent_a)


def test_a_reply_is_queued_by_its_author_and_announced(people, conversation, tap):
    factories.MessageFactory(conversation=conversation, inbox=conversation.inbox)
    department = tap(department_group(people.department_a.pk))

    reply = actions.queue_reply(conversation, text="We are on it.", by=people.agent_a.user)

    assert (reply.delivery_status, reply.author) == ("queued", people.agent_a)
    assert reply.raw  # built once, when queued
    assert department.types() == ["message.created"]
    assert ConversationActivity.objects.get(verb="replied").actor_agent == people.agent_a


def test_resending_an_uncertain_reply_queues_it_again_once(people, conversation, tap):
    uncertain = factories.MessageFactory(conversation=conversation, inbox=conversation.inbox, direction="out",
                                         delivery_status="uncertain")
    department = tap(department_group(people.department_a.pk))

    assert actions.resend(uncertain, by=people.manager) is True
    uncertain.refresh_from_db()
    assert actions.resend(uncertain, by=people.manager) is False  # queued now: not resent twice

    assert uncertain.delivery_status == "queued"
    assert [payload["status"] for _kind, payload in department.take()] == ["queued"]
    assert Message.objects.get(pk=uncertain.pk).delivery_history[-1]["detail"] == "resend requested by maria"


def test_presence_reaches_each_of_the_agents_departments_and_the_managers_once(people, tap):
    people.agent_a.departments.add(people.department_b)
    a, b, managers = (tap(department_group(people.department_a.pk)), tap(department_group(people.department_b.pk)),
                      tap(MANAGERS_GROUP))

    actions.set_presence(people.agent_a, Presence.AWAY, by=people.agent_a)
    actions.set_presence(people.agent_a, Presence.AWAY, by=people.agent_a)  # no change, no event

    expected = [("presence", {"agent": str(people.agent_a.public_id), "presence": "away"})]
    assert (a.take(), b.take(), managers.take()) == (expected, expected, expected)
    people.agent_a.refresh_from_db()
    assert people.agent_a.presence == "away"


def test_renaming_a_contact_tells_the_lists_of_their_open_conversations_and_records_who(people, conversation, tap):
    department = tap(department_group(people.department_a.pk))
    closed = factories.ConversationFactory(inbox=conversation.inbox, contact=conversation.contact, status="closed")

    actions.rename_contact(conversation.contact, "  Ann \n Smith ", by=people.agent_a)
    actions.rename_contact(conversation.contact, "Ann Smith", by=people.agent_a)  # unchanged: nothing happens

    assert department.take() == [("conversation.updated", {
        "conversation": str(conversation.public_id), "contact_name": "Ann Smith"})]
    conversation.contact.refresh_from_db()
    assert conversation.contact.name == "Ann Smith"
    activity = ConversationActivity.objects.get(conversation=conversation)
    assert (activity.verb, activity.actor_agent, activity.details["new"]) == ("contact_renamed", people.agent_a,
                                                                              "Ann Smith")
    assert not ConversationActivity.objects.filter(conversation=closed).exists()


def test_a_contact_name_longer_than_the_field_is_refused_naming_it(people, conversation):
    with pytest.raises(actions.ActionError) as refused:
        actions.rename_contact(conversation.contact, "x" * 256, by=people.agent_a)

    assert refused.value.field == "name"
