"""@mentions in notes: the colleague named sees it in their list until they open the conversation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from conversations.console.mentions import mentioned
from tests import factories

pytestmark = pytest.mark.django_db


def test_names_are_matched_longest_first_and_whole(people):
    ann = factories.AgentFactory(user__username="ann", name="Ann", departments=[people.department_a])
    ann_lee = factories.AgentFactory(user__username="alee", name="Ann Lee", departments=[people.department_a])
    agents = [ann, ann_lee, people.agent_a]
    assert mentioned("@Ann Lee, please look", agents) == [ann_lee]
    assert mentioned("ask @ann and @alice", agents) == [ann, people.agent_a]
    assert mentioned("mail ann@example.com or @Annabel", agents) == []


def test_the_colleague_named_in_a_note_is_told(client, people):
    carol = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Need help")
    factories.MessageFactory(conversation=conversation)
    client.force_login(people.agent_a.user)
    client.post(reverse("console:send", args=[conversation.public_id]),
                {"mode": "note", "text": "@Carol can you take the refund part?"})
    assert "You were mentioned" not in client.get("/?view=departments").content.decode()  # not the author
    client.force_login(carol.user)
    assert "You were mentioned" in client.get("/?view=departments").content.decode()
    client.get(reverse("console:conversation", args=[conversation.public_id]))
    assert "You were mentioned" not in client.get("/?view=departments").content.decode()
    assert not conversation.messages.filter(kind="note", delivery_status__gt="").exists()  # never emailed
