"""Inboxes that send through an email service (django-anymail): a small Postmark-like HTTP server
of the tests' own on loopback stands in for the service."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conversations.models import DeliveryStatus
from conversations.outgoing import delivery
from conversations.outgoing.replies import queue_reply

pytestmark = pytest.mark.django_db


class FakePostmark:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.body: dict = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append({"path": self.path, "token": self.headers.get("X-Postmark-Server-Token"),
                                         "payload": payload})
                body = service.body or {"To": payload.get("To"), "MessageID": "pm-1", "ErrorCode": 0,
                                        "Message": "OK", "SubmittedAt": "2026-11-21T10:00:00Z"}
                data = json.dumps(body).encode()
                self.send_response(service.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def postmark(settings):
    service = FakePostmark()
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": service.url}
    yield service
    service.server.shutdown()


@pytest.fixture
def anymail_conversation(smtp_server, inbox_for, customer_thread):
    inbox = inbox_for(smtp_server, outgoing_method="anymail", anymail_backend="anymail.backends.postmark.EmailBackend")
    conversation, _ = customer_thread(inbox)
    return conversation


def test_a_reply_goes_through_the_email_service_with_our_headers(postmark, anymail_conversation, smtp_server):
    message = queue_reply(anymail_conversation, text="Via the service", bcc=["audit@example.test"])

    assert delivery.deliver_message(message.pk).status == DeliveryStatus.SENT

    [request] = postmark.requests
    payload = request["payload"]
    headers = {h["Name"]: h["Value"] for h in payload.get("Headers", [])}
    message.refresh_from_db()
    assert request["token"] == "test-token"
    assert payload["To"] == "Ann Customer <ann@example.test>"
    assert payload["Bcc"] == "audit@example.test"
    assert payload["Subject"] == "Re: Printer on fire"
    assert headers["Message-ID"] == f"<{message.message_id}>"
    assert headers["In-Reply-To"] == "<second@example.test>"
    assert "Via the service" in payload["TextBody"]
    assert "pm-1" in message.delivery_server_reply
    assert smtp_server.received == []


def test_a_refusal_by_the_service_fails_the_reply(postmark, anymail_conversation):
    postmark.status = 422
    postmark.body = {"ErrorCode": 300, "Message": "Invalid email request"}
    message = queue_reply(anymail_conversation, text="Nope")

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.FAILED
    assert "Invalid email request" in message.delivery_last_error


def test_a_service_outage_is_retried(postmark, anymail_conversation):
    postmark.status = 503
    postmark.body = {"ErrorCode": 0, "Message": "Service unavailable"}
    message = queue_reply(anymail_conversation, text="Later")

    delivery.deliver_message(message.pk)

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.QUEUED
    assert message.next_attempt_at is not None
