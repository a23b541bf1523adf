"""Replies and notes through the API: threaded to the real SMTP server, once per Idempotency-Key,
refused whole when a recipient is bad."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.api.models import Upload
from conversations.models import DeliveryStatus, Direction, Message, MessageKind
from conversations.outgoing import delivery
from tests import factories
from tests.api.conftest import client_for, issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def thread(people, smtp_server):
    inbox = factories.InboxFactory(address="support@switchboard.test", display_name="Support",
                                   department=people.department_a, **smtp_server.inbox_settings())
    contact = factories.ContactFactory(address="ann@example.test", name="Ann Customer")
    conversation = factories.ConversationFactory(inbox=inbox, contact=contact, subject="Printer on fire")
    factories.MessageFactory(conversation=conversation, direction=Direction.IN, message_id="first@example.test",
                             subject="Printer on fire")
    factories.MessageFactory(conversation=conversation, direction=Direction.IN, message_id="second@example.test",
                             subject="Re: Printer on fire", references="<first@example.test>",
                             in_reply_to="<first@example.test>")
    return conversation


@pytest.fixture
def alice(people):
    return client_for(issue_token(user=people.agent_a.user))


def reply_url(conversation) -> str:
    return f"/api/conversations/{conversation.public_id}/replies/"


def deliver_queued() -> None:
    for pk in Message.objects.filter(delivery_status=DeliveryStatus.QUEUED).values_list("pk", flat=True):
        delivery.deliver_message(pk)


def test_a_reply_reaches_the_smtp_server_threaded(alice, thread, smtp_server):
    response = alice.post(reply_url(thread), {"text": "A technician is on the way.", "cc": ["Bo <bo@example.test>"]},
                          format="json")

    assert response.status_code == 201, response.content
    assert response.json()["delivery_status"] == "queued"
    deliver_queued()
    [received] = smtp_server.wait_for(1)
    email = received.message
    assert email["In-Reply-To"] == "<second@example.test>"
    assert email["References"] == "<first@example.test> <second@example.test>"
    assert email["Subject"] == "Re: Printer on fire"
    assert sorted(received.rcpt_tos) == ["ann@example.test", "bo@example.test"]
    assert "A technician is on the way." in email.get_body(("plain",)).get_content()
    assert "Alice from Support" in email["From"]


def test_the_same_idempotency_key_twice_sends_one_email(alice, thread, smtp_server):
    body = {"text": "Sorry for the wait."}
    first = alice.post(reply_url(thread), body, format="json", HTTP_IDEMPOTENCY_KEY="retry-7")
    second = alice.post(reply_url(thread), body, format="json", HTTP_IDEMPOTENCY_KEY="retry-7")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    deliver_queued()
    smtp_server.wait_for(1)
    assert thread.messages.filter(direction=Direction.OUT).count() == 1
    assert len(smtp_server.received) == 1


def test_a_key_used_again_for_another_request_is_refused(alice, thread):
    alice.post(reply_url(thread), {"text": "One"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = alice.post(reply_url(thread), {"text": "Two"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert thread.messages.filter(direction=Direction.OUT).count() == 1


def test_notes_are_idempotent_too_and_never_leave(alice, thread, smtp_server):
    url = f"/api/conversations/{thread.public_id}/notes/"
    for _ in range(2):
        response = alice.post(url, {"text": "Customer is a VIP."}, format="json", HTTP_IDEMPOTENCY_KEY="note-1")
    assert response.status_code == 200
    assert thread.messages.filter(kind=MessageKind.NOTE).count() == 1
    deliver_queued()
    assert smtp_server.received == []


def test_a_bad_cc_gets_400_naming_it_and_queues_nothing(alice, thread, smtp_server):
    response = alice.post(reply_url(thread), {"text": "Hi", "cc": ["bo@example.test", "not an address"]},
                          format="json", HTTP_IDEMPOTENCY_KEY="bad-cc")

    assert response.status_code == 400
    body = response.json()
    assert "not an address" in body["cc"][0]
    assert body["address"] == "not an address"
    assert not thread.messages.filter(direction=Direction.OUT).exists()
    # The failed request left no key behind: fixing the address with the same key works.
    fixed = alice.post(reply_url(thread), {"text": "Hi", "cc": ["bo@example.test"]}, format="json",
                       HTTP_IDEMPOTENCY_KEY="bad-cc")
    assert fixed.status_code == 201


def test_an_uploaded_file_goes_out_attached_and_only_its_uploader_can_attach_it(alice, thread, smtp_server, people):
    upload = alice.post("/api/uploads/", {"file": SimpleUploadedFile("plan.pdf", b"%PDF-1.4 plan", "application/pdf")},
                        format="multipart").json()
    bob = client_for(issue_token(user=people.manager))
    stolen = bob.post(reply_url(thread), {"text": "Mine now", "attachments": [upload["id"]]}, format="json")
    assert stolen.status_code == 400
    assert "attachments" in stolen.json()

    response = alice.post(reply_url(thread), {"text": "The plan.", "attachments": [upload["id"]]}, format="json")

    assert response.status_code == 201, response.content
    assert [a["filename"] for a in response.json()["attachments"]] == ["plan.pdf"]
    assert not Upload.objects.exists()
    deliver_queued()
    [received] = smtp_server.wait_for(1)
    [part] = list(received.message.iter_attachments())
    assert part.get_filename() == "plan.pdf"
    assert part.get_content() == b"%PDF-1.4 plan"


def test_an_upload_over_the_limit_is_refused(alice, settings):
    settings.API_UPLOAD_MAX_BYTES = 10
    response = alice.post("/api/uploads/", {"file": SimpleUploadedFile("big.bin", b"x" * 11)}, format="multipart")
    assert response.status_code == 400
    assert "big.bin" in response.json()["file"][0]
    assert not Upload.objects.exists()


def test_a_canned_response_is_rendered_into_the_reply(alice, thread, people, smtp_server):
    canned = factories.CannedResponseFactory(
        owner=people.agent_a.user, body="Hello {{ contact.name }}, {{agent.name}} of {{ inbox.name }} here "
                                        "({{ conversation.id }}). {{ settings.SECRET_KEY }} {% load x %}")
    response = alice.post(reply_url(thread), {"canned_response": str(canned.public_id), "text": "See you."},
                          format="json")

    assert response.status_code == 201, response.content
    text = response.json()["text"]
    assert f"Hello Ann Customer, Alice of Support here ({thread.public_id})." in text
    assert "{{ settings.SECRET_KEY }} {% load x %}" in text  # not a template: left as written
    assert "See you." in text
