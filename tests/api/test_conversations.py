"""The conversation list's views and filters, search, contacts, canned responses and presence."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import Conversation
from tests import factories
from tests.api.conftest import client_for, issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(people):
    return client_for(issue_token(user=people.agent_a.user))


@pytest.fixture
def inbox(people):
    return factories.InboxFactory(department=people.department_a, display_name="Support")


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_views_and_filters(alice, people, inbox):
    mine = factories.ConversationFactory(inbox=inbox, assignee=people.agent_a, priority=3)
    waiting = factories.ConversationFactory(inbox=inbox, status="pending")
    old = factories.ConversationFactory(inbox=inbox, status="closed")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - dt.timedelta(days=3))
    other = factories.InboxFactory(department=people.department_a)
    elsewhere = factories.ConversationFactory(inbox=other, contact=mine.contact)

    assert ids(alice.get("/api/conversations/", {"view": "mine"})) == [str(mine.public_id)]
    assert str(mine.public_id) not in ids(alice.get("/api/conversations/", {"view": "unassigned"}))
    assert ids(alice.get("/api/conversations/", {"status": "pending"})) == [str(waiting.public_id)]
    assert ids(alice.get("/api/conversations/", {"priority": 3})) == [str(mine.public_id)]
    assert ids(alice.get("/api/conversations/", {"inbox": str(other.public_id)})) == [str(elsewhere.public_id)]
    assert set(ids(alice.get("/api/conversations/", {"contact": str(mine.contact.public_id)}))) == {
        str(mine.public_id), str(elsewhere.public_id)}
    since = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert str(old.public_id) not in ids(alice.get("/api/conversations/", {"updated_since": since}))
    assert ids(alice.get("/api/conversations/", {"assignee": str(people.agent_a.public_id)})) == [str(mine.public_id)]


def test_a_bad_filter_names_itself(alice):
    assert "status" in alice.get("/api/conversations/", {"status": "on fire"}).json()
    assert "updated_since" in alice.get("/api/conversations/", {"updated_since": "yesterday"}).json()
    assert "inbox" in alice.get("/api/conversations/", {"inbox": "42"}).json()


def test_the_list_pages_by_cursor_newest_activity_first(alice, inbox):
    rows = [factories.ConversationFactory(inbox=inbox, last_message_at=timezone.now() - dt.timedelta(minutes=n))
            for n in range(5)]
    first = alice.get("/api/conversations/", {"page_size": 3}).json()
    second = alice.get(first["next"]).json()

    seen = [row["id"] for row in first["results"] + second["results"]]
    assert seen == [str(row.public_id) for row in rows]
    assert second["next"] is None


@pytest.mark.parametrize("query", ["toner", "ann@example", "Ann", "cartridge"])
def test_search_finds_subject_contact_and_message_text(alice, people, inbox, query):
    contact = factories.ContactFactory(address="ann@example.test", name="Ann Customer")
    hit = factories.ConversationFactory(inbox=inbox, contact=contact, subject="Out of toner")
    factories.MessageFactory(conversation=hit, text="The cartridge is empty.")
    factories.MessageFactory(conversation=factories.ConversationFactory(inbox=inbox, subject="Invoice"),
                             text="Please send the invoice.")
    hidden = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_b),
                                           contact=contact, subject="Out of toner too")
    factories.MessageFactory(conversation=hidden, text="The cartridge is empty.")

    if query == "ann@example":
        query = "ann@example.test"  # full-text search matches whole words and addresses
    assert ids(alice.get("/api/conversations/", {"q": query})) == [str(hit.public_id)]


def test_a_contact_shows_only_the_conversations_the_caller_may_see(alice, people, inbox):
    contact = factories.ContactFactory(name="Ann")
    visible = factories.ConversationFactory(inbox=inbox, contact=contact)
    factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_b), contact=contact)

    body = alice.get(f"/api/contacts/{contact.public_id}/").json()
    assert [c["id"] for c in body["conversations"]] == [str(visible.public_id)]
    renamed = alice.patch(f"/api/contacts/{contact.public_id}/", {"name": "  Ann   Smith "}, format="json")
    assert renamed.json()["name"] == "Ann Smith"


def test_canned_responses_render_only_the_four_variables(alice, people, inbox):
    contact = factories.ContactFactory(name="Ann <script>")
    conversation = factories.ConversationFactory(inbox=inbox, contact=contact)
    canned = factories.CannedResponseFactory(
        department=people.department_a,
        body="Dear {{ contact.name }}, {{ agent.name }} at {{inbox.name}} ({{ conversation.id }}) "
             "{{ contact.address }}")
    factories.CannedResponseFactory(department=people.department_b, title="Bob's team only")

    titles = [r["title"] for r in alice.get("/api/canned-responses/").json()["results"]]
    rendered = alice.get(f"/api/canned-responses/{canned.public_id}/render/",
                         {"conversation": str(conversation.public_id)}).json()["text"]

    assert "Bob's team only" not in titles
    assert rendered == f"Dear Ann <script>, Alice at Support ({conversation.public_id}) {{{{ contact.address }}}}"


def test_an_agent_cannot_share_a_canned_response_with_a_department(alice, people):
    response = alice.post("/api/canned-responses/", {"title": "t", "body": "b",
                                                     "department_id": str(people.department_a.public_id)},
                          format="json")
    assert response.status_code == 400
    assert "department_id" in response.json()


def test_presence_is_set_and_colleagues_see_it_with_their_load(alice, people, inbox):
    carol = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    factories.ConversationFactory(inbox=inbox, assignee=carol)
    factories.ConversationFactory(inbox=inbox, assignee=carol, status="closed")

    me = alice.post("/api/agents/me/presence/", {"presence": "online"}, format="json").json()
    colleagues = {a["name"]: a for a in alice.get("/api/agents/").json()["results"]}

    assert me["presence"] == "online"
    assert colleagues["Alice"]["presence"] == "online"
    assert colleagues["Carol"]["load"] == 1
    assert "Bob" not in colleagues
    bad = alice.post("/api/agents/me/presence/", {"presence": "asleep"}, format="json")
    assert "presence" in bad.json()


def test_mark_read_and_unread(alice, people, inbox):
    from conversations.console.models import ReadMarker

    conversation = factories.ConversationFactory(inbox=inbox)
    url = f"/api/conversations/{conversation.public_id}/read/"

    assert alice.post(url).status_code == 204
    assert ReadMarker.objects.filter(user=people.agent_a.user, conversation=conversation).exists()
    assert alice.delete(url).status_code == 204
    assert not ReadMarker.objects.filter(user=people.agent_a.user, conversation=conversation).exists()
