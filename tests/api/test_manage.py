"""Managers' endpoints: inboxes with write-only secrets, their health, and the quarantine."""

from __future__ import annotations

import pytest

from conversations.incoming.ingest import ingest_email
from conversations.models import QuarantineStatus
from inboxes.models import Inbox
from tests import factories
from tests.api.conftest import client_for, issue_token
from tests.ingest.conftest import mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def maria(people):
    return client_for(issue_token(user=people.manager))


def test_an_inbox_is_created_and_updated_and_its_secrets_never_come_back(maria, people):
    created = maria.post("/api/manage/inboxes/", {
        "address": "sales@switchboard.test", "display_name": "Sales", "department": str(people.department_a.public_id),
        "imap_host": "imap.switchboard.test", "imap_secret": "hunter2", "smtp_secret": "swordfish"}, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert "hunter2" not in created.content.decode()
    assert "imap_secret" not in body
    assert body["has_secrets"] == {"imap_secret": True, "smtp_secret": True, "oauth_client_secret": False}
    inbox = Inbox.objects.get(public_id=body["id"])
    assert inbox.imap_secret == "hunter2"

    updated = maria.patch(f"/api/manage/inboxes/{inbox.public_id}/", {"poll_interval": 300}, format="json")
    assert updated.status_code == 200
    inbox.refresh_from_db()
    assert (inbox.poll_interval, inbox.imap_secret) == (300, "hunter2")  # an update without it keeps it
    listed = maria.get("/api/manage/inboxes/").content.decode()
    assert "hunter2" not in listed
    assert "swordfish" not in listed


def test_an_invalid_inbox_names_the_field(maria, people):
    response = maria.post("/api/manage/inboxes/", {
        "address": "x@switchboard.test", "display_name": "X", "department": str(people.department_a.public_id),
        "after_import": "move"}, format="json")
    assert response.status_code == 400
    assert "after_import_folder" in response.json()


def test_the_inbox_status_says_what_is_wrong(maria, people):
    inbox = factories.InboxFactory(department=people.department_a, connection_status="error",
                                   last_error="The server refused the login.")
    conversation = factories.ConversationFactory(inbox=inbox)
    factories.MessageFactory(conversation=conversation, direction="out", delivery_status="uncertain")
    factories.QuarantinedMessageFactory(inbox=inbox)

    status = maria.get(f"/api/manage/inboxes/{inbox.public_id}/status/").json()

    assert status["healthy"] is False
    assert status["last_error"] == "The server refused the login."
    assert status["replies"]["uncertain"] == 1
    assert status["quarantined"] == 1


def test_quarantine_retry_imports_the_message_after_the_fix(maria, people, settings):
    inbox = factories.InboxFactory(department=people.department_a)
    settings.MAX_MESSAGE_BYTES = 1000
    raw = mail("alternative_with_attachment.eml")
    held = ingest_email(inbox, raw, imap_folder="INBOX", imap_uidvalidity=3, imap_uid=42).quarantined
    listed = maria.get(f"/api/manage/quarantine/?inbox={inbox.public_id}").json()["results"]
    assert [row["id"] for row in listed] == [str(held.public_id)]
    download = maria.get(f"/api/manage/quarantine/{held.public_id}/raw/")
    assert b"".join(download.streaming_content) == raw

    still = maria.post(f"/api/manage/quarantine/{held.public_id}/retry/").json()
    assert still["status"] == QuarantineStatus.HELD
    settings.MAX_MESSAGE_BYTES = 10_000_000
    retried = maria.post(f"/api/manage/quarantine/{held.public_id}/retry/").json()

    assert retried["status"] == QuarantineStatus.RETRIED
    assert retried["conversation"] is not None
    assert maria.get(f"/api/conversations/{retried['conversation']}/").status_code == 200


def test_quarantine_discard(maria, people):
    held = factories.QuarantinedMessageFactory(inbox=factories.InboxFactory(department=people.department_a))
    assert maria.post(f"/api/manage/quarantine/{held.public_id}/discard/").json()["status"] == "discarded"


def test_a_manager_creates_an_ai_agent_in_a_department(maria, people):
    response = maria.post("/api/manage/agents/", {
        "kind": "ai", "name": "Robo", "ai_model": "small", "ai_api_key": "sk-secret",
        "departments": [str(people.department_a.public_id)]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["departments"] == [str(people.department_a.public_id)]
    assert "sk-secret" not in response.content.decode()
    human_without_user = maria.post("/api/manage/agents/", {"kind": "human", "name": "Nobody"}, format="json")
    assert human_without_user.status_code == 400
    assert "user" in human_without_user.json()
