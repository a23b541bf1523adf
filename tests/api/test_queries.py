"""The list's queries do not grow with the page, nor the detail's with messages and attachments."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories
from tests.api.conftest import client_for, issue_token

pytestmark = pytest.mark.django_db


def count_queries(client, url: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries), response.json()


@pytest.fixture
def busy_department(people):
    inbox = factories.InboxFactory(department=people.department_a)
    for n in range(110):
        contact = factories.ContactFactory()
        factories.ConversationFactory(inbox=inbox, contact=contact, assignee=people.agent_a if n % 2 else None,
                                      subject=f"Question {n} about invoices")
    return inbox


@pytest.mark.parametrize("who", ["agent", "manager"])
def test_the_list_costs_the_same_for_10_and_100_rows(people, busy_department, who):
    user = people.agent_a.user if who == "agent" else people.manager
    client = client_for(issue_token(user=user))
    client.get("/api/tokens/")  # the token's last-used stamp, written once a minute, is not the list's

    small, page_10 = count_queries(client, "/api/conversations/?page_size=10")
    large, page_100 = count_queries(client, "/api/conversations/?page_size=100")
    searched, found = count_queries(client, "/api/conversations/?page_size=100&q=invoices&status=open")

    assert (len(page_10["results"]), len(page_100["results"]), len(found["results"])) == (10, 100, 100)
    assert small == large == searched
    assert small <= 4  # the token, the caller's departments, the page


def test_the_detail_costs_the_same_whatever_its_messages_and_attachments(people):
    client = client_for(issue_token(user=people.agent_a.user))
    inbox = factories.InboxFactory(department=people.department_a)
    quiet = factories.ConversationFactory(inbox=inbox)
    factories.MessageFactory(conversation=quiet)
    busy = factories.ConversationFactory(inbox=inbox)
    for _ in range(30):
        message = factories.MessageFactory(conversation=busy, author=people.agent_a)
        factories.AttachmentFactory(message=message)
        factories.AttachmentFactory(message=message)
    client.get("/api/agents/me/")  # the token's last-used stamp, written once a minute, is not the detail's

    one, quiet_body = count_queries(client, f"/api/conversations/{quiet.public_id}/")
    many, busy_body = count_queries(client, f"/api/conversations/{busy.public_id}/")

    assert len(quiet_body["messages"]) == 1
    assert len(busy_body["messages"]) == 30
    assert sum(len(m["attachments"]) for m in busy_body["messages"]) == 60
    assert one == many <= 6
