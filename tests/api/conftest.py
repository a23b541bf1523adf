"""The API's test world: two departments, their agents, a manager, a conversation of department A
with mail, an attachment and a failed reply, and tokens for each person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from conversations.api.models import ApiToken, Upload
from conversations.models import DeliveryStatus, Direction
from tests import factories


def issue_token(name: str = "script", **owner: Any) -> str:
    token = ApiToken(name=name, **owner)
    secret = token.new_secret()
    token.save()
    return secret


def client_for(secret: str | None) -> APIClient:
    client = APIClient()
    if secret:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@dataclass
class World:
    people: Any
    inbox: Any
    conversation: Any
    incoming: Any
    failed_reply: Any
    attachment: Any
    upload: Any
    personal_canned: Any
    shared_canned: Any
    spare_token: Any
    quarantined: Any
    tokens: dict[str, str]

    def client(self, who: str) -> APIClient:
        return client_for(self.tokens.get(who))


@pytest.fixture
def world(people, media_root) -> World:
    inbox = factories.InboxFactory(address="support@switchboard.test", department=people.department_a)
    contact = factories.ContactFactory(address="ann@example.test", name="Ann Customer")
    conversation = factories.ConversationFactory(inbox=inbox, contact=contact, subject="Printer on fire")
    incoming = factories.MessageFactory(conversation=conversation, direction=Direction.IN,
                                        message_id="first@example.test")
    incoming.raw.save("in.eml", ContentFile(b"From: ann@example.test\r\nSubject: Printer on fire\r\n\r\nHelp\r\n"))
    attachment = factories.AttachmentFactory(message=incoming)
    failed = factories.MessageFactory(conversation=conversation, direction=Direction.OUT, message_id="out@sb.test",
                                      delivery_status=DeliveryStatus.FAILED, from_address=inbox.address)
    upload = Upload(user=people.agent_a.user, filename="notes.txt", content_type="text/plain", size=5)
    upload.file.save("upload", ContentFile(b"notes"), save=False)
    upload.save()
    personal = factories.CannedResponseFactory(owner=people.agent_a.user, body="Hi {{ contact.name }}")
    shared = factories.CannedResponseFactory(department=people.department_a, body="Thanks, {{ agent.name }}")
    spare = ApiToken(name="spare", user=people.agent_a.user)
    spare.new_secret()
    spare.save()
    revoked = ApiToken(name="revoked", user=people.agent_a.user)
    revoked_secret = revoked.new_secret()
    revoked.save()
    revoked.revoke()
    tokens = {
        "alice": issue_token(user=people.agent_a.user),
        "bob": issue_token(user=people.agent_b.user),
        "maria": issue_token(user=people.manager),
        "revoked": revoked_secret,
    }
    return World(people, inbox, conversation, incoming, failed, attachment, upload, personal, shared, spare,
                 factories.QuarantinedMessageFactory(inbox=inbox), tokens)
