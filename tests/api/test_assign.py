"""Two agents claiming one conversation at once: one wins, the other gets 409 and the current state."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests import factories
from tests.api.conftest import client_for, issue_token


def _two_agents_of_department_a(people):
    carol = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    return people.agent_a, carol


@pytest.mark.django_db(transaction=True)
def test_two_agents_assigning_at_once_one_wins_the_other_gets_409(people):
    alice, carol = _two_agents_of_department_a(people)
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    secrets = [issue_token(user=alice.user), issue_token(user=carol.user)]
    url = f"/api/conversations/{conversation.public_id}/assign/"
    start, answers = threading.Barrier(2), {}

    def claim(secret: str) -> None:
        client = client_for(secret)
        try:
            start.wait(timeout=10)
            answers[secret] = client.post(url, {}, format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(secret,)) for secret in secrets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    codes = sorted(answer.status_code for answer in answers.values())
    assert codes == [200, 409], [a.content for a in answers.values()]
    winner = next(a for a in answers.values() if a.status_code == 200).json()["assignee"]
    loser = next(a for a in answers.values() if a.status_code == 409).json()
    assert loser["conversation"]["assignee"] == winner
    assert f"assigned to {winner['name']}" in loser["detail"]
    conversation.refresh_from_db()
    assert str(conversation.assignee.public_id) == winner["id"]


@pytest.mark.django_db
def test_taking_over_names_the_holder_the_client_saw(people):
    alice, carol = _two_agents_of_department_a(people)
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a),
                                                 assignee=alice)
    client = client_for(issue_token(user=carol.user))
    url = f"/api/conversations/{conversation.public_id}/assign/"

    assert client.post(url, {}, format="json").status_code == 409  # "to me" expects it unassigned
    taken = client.post(url, {"expected_assignee": str(alice.public_id)}, format="json")

    assert taken.status_code == 200
    assert taken.json()["assignee"]["id"] == str(carol.public_id)


@pytest.mark.django_db
def test_assigning_someone_outside_the_department_names_the_field(people):
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    client = client_for(issue_token(user=people.manager))

    response = client.post(f"/api/conversations/{conversation.public_id}/assign/",
                           {"agent": str(people.agent_b.public_id)}, format="json")

    assert response.status_code == 400
    assert "not in the Department A department" in response.json()["assignee"][0]
