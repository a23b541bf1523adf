"""Tokens: shown once, stored hashed, stamped when used, refused once revoked; bot tokens act as their agent;
the console's session works with CSRF."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.admin.sites import site
from rest_framework.test import APIClient

from conversations.api.models import ApiToken
from tests import factories
from tests.api.conftest import client_for, issue_token

pytestmark = pytest.mark.django_db


def test_a_token_is_shown_once_and_stored_hashed(people):
    client = APIClient()
    client.force_login(people.agent_a.user)

    created = client.post("/api/tokens/", {"name": "export"}, format="json").json()
    listed = client.get("/api/tokens/").json()["results"]

    secret = created["secret"]
    row = ApiToken.objects.get(public_id=created["id"])
    assert secret.startswith(created["prefix"])
    assert row.prefix == created["prefix"]
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiToken.objects.filter(pk=row.pk).values().get())
    assert "secret" not in listed[0]


def test_a_token_works_is_stamped_and_is_refused_once_revoked(people):
    secret = issue_token(user=people.agent_a.user)
    client = client_for(secret)

    assert client.get("/api/agents/me/").json()["name"] == "Alice"
    token = ApiToken.objects.get(prefix=secret[:11])
    assert token.last_used_at is not None

    assert client.delete(f"/api/tokens/{token.public_id}/").status_code == 204
    refused = client.get("/api/agents/me/")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_a_token_of_an_inactive_user_is_refused(people):
    secret = issue_token(user=people.agent_a.user)
    people.agent_a.user.is_active = False
    people.agent_a.user.save()
    assert client_for(secret).get("/api/agents/me/").status_code == 401


def test_a_bot_token_acts_as_its_agent_in_its_departments(people):
    bot = factories.AIAgentFactory(name="Robo", departments=[people.department_a])
    mine = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    theirs = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_b))
    client = client_for(issue_token(agent=bot))

    assert client.get("/api/agents/me/").json()["id"] == str(bot.public_id)
    assert [c["id"] for c in client.get("/api/conversations/").json()["results"]] == [str(mine.public_id)]
    assert client.get(f"/api/conversations/{theirs.public_id}/").status_code == 404
    claimed = client.post(f"/api/conversations/{mine.public_id}/assign/", {}, format="json")
    assert claimed.json()["assignee"]["name"] == "Robo"
    note = client.post(f"/api/conversations/{mine.public_id}/notes/", {"text": "Looked it up."}, format="json")
    assert note.json()["author"]["name"] == "Robo"
    assert client.get("/api/manage/inboxes/").status_code == 404


def test_the_session_needs_its_csrf_token_for_writes(people):
    conversation = factories.ConversationFactory(inbox=factories.InboxFactory(department=people.department_a))
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people.agent_a.user)
    url = f"/api/conversations/{conversation.public_id}/status/"

    assert client.get("/api/conversations/").status_code == 200
    assert client.post(url, {"status": "closed"}, format="json").status_code == 403
    client.get("/admin/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    assert client.post(url, {"status": "closed"}, format="json", HTTP_X_CSRFTOKEN=csrf).status_code == 200


def test_the_admin_shows_a_new_token_once(people, rf):
    from django.contrib.messages.storage.fallback import FallbackStorage

    request = rf.post("/admin/api/apitoken/add/")
    request.user = people.manager
    request.session = {}
    request._messages = FallbackStorage(request)
    token = ApiToken(name="bot", agent=factories.AIAgentFactory())
    site._registry[ApiToken].save_model(request, token, form=None, change=False)

    [shown] = [str(m) for m in request._messages]
    secret = shown.split(": ")[1].split(" ")[0]
    assert hashlib.sha256(secret.encode()).hexdigest() == ApiToken.objects.get(pk=token.pk).secret_sha256
    assert token.created_by == people.manager


def test_the_throttle_answers_429_past_the_allowance(people, settings):
    settings.API_THROTTLE_PER_MINUTE = 3
    client = client_for(issue_token(user=people.agent_a.user))
    codes = [client.get("/api/agents/me/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    other = client_for(issue_token(user=people.agent_a.user))  # a token has its own allowance
    assert other.get("/api/agents/me/").status_code == 200
