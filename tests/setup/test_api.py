"""The managers' API endpoint for the connection test."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from tests.setup.conftest import SMTP_PASSWORD


@pytest.fixture
def api():
    return APIClient()


def url(inbox) -> str:
    return reverse("api:manage-inbox-test-connection", kwargs={"inbox": inbox.public_id})


def test_a_manager_runs_the_test_and_every_step_passes(api, people, setup_inbox, mail_account):
    api.force_authenticate(people.manager)
    response = api.post(url(setup_inbox), {}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert {"name", "ok", "seconds", "detail", "advice", "data"} <= set(body["steps"][0])
    assert [step["name"] for step in body["steps"]][-1] == "SMTP: login"
    detail = api.get(reverse("api:manage-inbox", kwargs={"inbox": setup_inbox.public_id})).content.decode()
    for secret in (mail_account.password, SMTP_PASSWORD):
        assert secret not in json.dumps(body)
        assert secret not in detail


def test_a_failing_step_says_what_to_do(api, people, setup_inbox):
    setup_inbox.imap_folder = "Archive/Missing"
    setup_inbox.save()
    api.force_authenticate(people.manager)
    body = api.post(url(setup_inbox), {}, format="json").json()
    failed = next(step for step in body["steps"] if not step["ok"])
    assert failed["name"] == "IMAP: folder"
    assert "INBOX" in failed["data"]["folders"]


def test_it_is_rate_limited_per_inbox(api, people, setup_inbox, settings):
    settings.CONNECTION_TESTS_PER_MINUTE = 1
    setup_inbox.imap_host = "imap.does-not-exist.invalid"
    setup_inbox.save()
    api.force_authenticate(people.manager)
    assert [api.post(url(setup_inbox), {}, format="json").status_code for _ in range(2)] == [200, 429]


def test_an_agent_gets_404_and_a_stranger_401(api, people, setup_inbox):
    api.force_authenticate(people.agent_a.user)
    assert api.post(url(setup_inbox), {}, format="json").status_code == 404
    api.force_authenticate(None)
    assert api.post(url(setup_inbox), {}, format="json").status_code == 401


def test_changes_through_the_api_are_recorded_without_values(api, people, setup_inbox):
    api.force_authenticate(people.manager)
    response = api.patch(reverse("api:manage-inbox", kwargs={"inbox": setup_inbox.public_id}),
                         {"imap_secret": "api-new-secret", "poll_interval": 300}, format="json")
    assert response.status_code == 200, response.content
    change = setup_inbox.changes.get()
    assert (change.user, change.action, change.fields) == (people.manager, "changed", ["imap_secret", "poll_interval"])
    assert "api-new-secret" not in response.content.decode()
