"""The admin writes conversations only through the actions, and never writes messages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from conversations.live.events import department_group
from conversations.models import ConversationActivity, Message
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_manager_cannot_add_or_edit_a_message_by_hand(client, people):
    message = factories.MessageFactory()
    client.force_login(people.manager)

    assert client.get(reverse("admin:conversations_message_add")).status_code == 403
    before = Message.objects.count()
    page = client.get(reverse("admin:conversations_message_change", args=[message.pk]))
    posted = client.post(reverse("admin:conversations_message_change", args=[message.pk]),
                         {"subject": "rewritten", "from_address": "someone@else.test"})

    assert page.status_code == 200
    assert 'name="subject"' not in page.content.decode()  # shown, not editable
    assert posted.status_code == 403
    message.refresh_from_db()
    assert message.subject != "rewritten"
    assert Message.objects.count() == before


def test_changing_a_conversation_in_the_admin_goes_through_the_actions(client, people, tap):
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    listening = tap(department_group(people.department_a.pk))
    client.force_login(people.manager)

    response = client.post(reverse("admin:conversations_conversation_change", args=[conversation.pk]), {
        "subject": conversation.subject, "status": "closed", "priority": 2,
        "department": people.department_a.pk, "assignee": people.agent_a.pk,
        "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0,
        "activities-TOTAL_FORMS": 0, "activities-INITIAL_FORMS": 0,
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    conversation.refresh_from_db()
    assert (conversation.status, conversation.priority, conversation.assignee) == ("closed", 2, people.agent_a)
    assert conversation.closed_at is not None
    assert sorted(listening.types()) == ["conversation.assigned", "conversation.updated", "conversation.updated"]
    assert set(ConversationActivity.objects.values_list("verb", "actor_user")) == {
        ("closed", people.manager.pk), ("priority", people.manager.pk), ("assigned", people.manager.pk)}


def test_an_assignee_outside_the_department_is_refused_with_a_message(client, people):
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    client.force_login(people.manager)

    response = client.post(reverse("admin:conversations_conversation_change", args=[conversation.pk]), {
        "subject": conversation.subject, "status": "open", "priority": 1,
        "department": people.department_a.pk, "assignee": people.agent_b.pk,
        "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0,
        "activities-TOTAL_FORMS": 0, "activities-INITIAL_FORMS": 0,
    }, follow=True)

    assert "Bob is not in the Department A department" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.assignee is None


def test_conversations_are_not_added_by_hand(client, people):
    client.force_login(people.manager)
    assert client.get(reverse("admin:conversations_conversation_add")).status_code == 403


def test_a_manager_hands_an_ai_agents_conversation_to_a_person_from_the_admin(client, people):
    inbox = factories.InboxFactory(department=people.department_a)
    assistant = factories.AIAgentFactory(departments=[people.department_a])
    with_ai = factories.ConversationFactory(inbox=inbox, assignee=assistant)
    with_person = factories.ConversationFactory(inbox=inbox, assignee=people.agent_a)
    client.force_login(people.manager)

    response = client.post(reverse("admin:conversations_conversation_changelist"), {
        "action": "hand_off_to_a_person", "_selected_action": [with_ai.pk, with_person.pk]}, follow=True)

    page = response.content.decode()
    assert "Handed 1 conversation(s) to the human queue." in page
    assert "Left 1 conversation(s) alone: they are not assigned to an AI agent." in page
    with_ai.refresh_from_db()
    with_person.refresh_from_db()
    assert with_ai.assignee != assistant
    assert with_person.assignee == people.agent_a
    note = with_ai.messages.get(kind="note")
    assert note.text == f"Handed off to a person: {people.manager.get_username()} handed it over from the admin"
