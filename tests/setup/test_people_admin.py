"""Departments, agents and canned responses as a manager sees them in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(client, people):
    client.force_login(people.manager)
    return people.manager


def test_the_department_page_lists_its_members_and_counts(client, manager, people):
    factories.InboxFactory(department=people.department_a)
    page = client.get(reverse("admin:departments_department_changelist")).content.decode()
    assert "Members" in page
    assert "Inboxes" in page
    page = client.get(reverse("admin:departments_department_change", args=[people.department_a.pk])).content.decode()
    assert "Alice" in page
    assert "Bob" not in page


def test_a_member_is_added_from_the_department_page(client, manager, people):
    url = reverse("admin:departments_department_change", args=[people.department_b.pk])
    form = client.get(url).context["adminform"].form
    prefix = "Agent_departments-"
    data = {"name": people.department_b.name, "routing_strategy": people.department_b.routing_strategy,
            "default_capacity": 10, "offline_grace_seconds": 300,
            f"{prefix}TOTAL_FORMS": "2", f"{prefix}INITIAL_FORMS": "1", f"{prefix}MIN_NUM_FORMS": "0",
            f"{prefix}MAX_NUM_FORMS": "1000",
            f"{prefix}0-id": people.department_b.agents.through.objects.get(agent=people.agent_b).pk,
            f"{prefix}0-department": people.department_b.pk, f"{prefix}0-agent": people.agent_b.pk,
            f"{prefix}1-department": people.department_b.pk, f"{prefix}1-agent": people.agent_a.pk}
    assert form is not None
    response = client.post(url, data)
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert set(people.department_b.agents.values_list("name", flat=True)) == {"Alice", "Bob"}


def test_the_agent_list_shows_presence_and_departments(client, manager, people):
    people.agent_a.presence = "online"
    people.agent_a.save()
    page = client.get(reverse("admin:agents_agent_changelist")).content.decode()
    assert "Department A" in page
    assert "Online" in page


def test_canned_responses_say_whether_they_are_shared(client, manager, people):
    factories.CannedResponseFactory(title="Hello all", department=None)
    factories.CannedResponseFactory(title="Hello A", department=people.department_a)
    page = client.get(reverse("admin:conversations_cannedresponse_changelist")).content.decode()
    assert "Shared (every department)" in page
    assert "Department A" in page
