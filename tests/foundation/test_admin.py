"""Every model is in the admin for managers; agents and strangers are kept out."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import IntegrityError, connection
from django.urls import reverse

from agents.models import Agent, AgentKind
from conversations.models import Attachment, CannedResponse, Contact, Conversation, Message, QuarantinedMessage
from departments.models import Department
from inboxes.models import Inbox
from tests import factories

MODELS = [Department, Agent, Inbox, Contact, Conversation, Message, Attachment, CannedResponse, QuarantinedMessage]
REGISTERED = [m for m in MODELS if admin.site.is_registered(m)]


def test_every_model_but_attachments_has_an_admin_page():
    # Attachments are shown inline on their message.
    assert set(MODELS) - set(REGISTERED) == {Attachment}


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
def test_manager_opens_list_and_add_pages(client, people, model):
    factories.MessageFactory()
    client.force_login(people.manager)
    opts = model._meta
    assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).status_code == 200
    if admin.site._registry[model].has_add_permission(type("R", (), {"user": people.manager})()):
        assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add")).status_code == 200


@pytest.mark.django_db
def test_agent_is_not_let_into_the_admin(client, people):
    client.force_login(people.agent_a.user)
    response = client.get(reverse("admin:inboxes_inbox_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_stranger_is_sent_to_the_login_page(client):
    response = client.get(reverse("admin:conversations_message_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_manager_creates_an_inbox_and_its_password_is_not_shown_back(client, people):
    client.force_login(people.manager)
    response = client.post(reverse("admin:inboxes_inbox_add"), {
        "address": "help@example.test", "display_name": "Help", "department": people.department_a.pk,
        "active": "on", "auth_method": "password", "imap_host": "imap.example.test", "imap_port": 993,
        "imap_security": "ssl", "imap_verify_cert": "on", "imap_username": "help@example.test",
        "imap_secret": "imap-password-123", "imap_folder": "INBOX", "poll_interval": 60, "after_import": "leave",
        "import_since_0": "2026-01-01", "import_since_1": "00:00:00",
        "outgoing_method": "smtp", "smtp_host": "smtp.example.test", "smtp_port": 465, "smtp_security": "ssl",
        "smtp_verify_cert": "on", "smtp_username": "help@example.test", "smtp_secret": "smtp-password-456",
        "sent_folder": "Sent", "use_agent_name": "on",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    inbox = Inbox.objects.get(address="help@example.test")
    assert inbox.imap_secret == "imap-password-123"
    page = client.get(reverse("admin:inboxes_inbox_change", args=[inbox.pk])).content.decode()
    assert "imap-password-123" not in page
    assert "smtp-password-456" not in page


@pytest.mark.django_db
def test_moving_mail_after_import_needs_a_folder(client, people):
    inbox = factories.InboxFactory(after_import="move", after_import_folder="")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="folder"):
        inbox.full_clean()


@pytest.mark.django_db
def test_a_human_agent_needs_a_user_and_an_ai_agent_has_none():
    with pytest.raises(IntegrityError):
        Agent.objects.create(kind=AgentKind.HUMAN, name="Nobody")


@pytest.mark.django_db
def test_an_ai_agent_keeps_its_api_key_encrypted():
    agent = factories.AIAgentFactory(ai_api_key="sk-test-secret")
    agent.refresh_from_db()
    assert agent.ai_api_key == "sk-test-secret"
    with connection.cursor() as cursor:
        cursor.execute("SELECT ai_api_key FROM agents_agent WHERE id = %s", [agent.pk])
        stored = cursor.fetchone()[0]
    assert "sk-test-secret" not in stored
    assert stored.startswith("fernet:")


@pytest.mark.django_db
def test_manager_resends_an_uncertain_reply_from_the_admin(client, people):
    uncertain = factories.MessageFactory(direction="out", delivery_status="uncertain", message_id="r1@switchboard.test")
    sent = factories.MessageFactory(direction="out", delivery_status="sent")
    client.force_login(people.manager)
    response = client.post(reverse("admin:conversations_message_changelist"),
                           {"action": "resend", "_selected_action": [uncertain.pk, sent.pk]}, follow=True)
    assert "1 queued again; 1 skipped" in response.content.decode()
    uncertain.refresh_from_db()
    sent.refresh_from_db()
    assert uncertain.delivery_status == "queued"
    assert uncertain.message_id == "r1@switchboard.test"
    assert "resend requested by maria" in uncertain.delivery_history[-1]["detail"]
    assert sent.delivery_status == "sent"
