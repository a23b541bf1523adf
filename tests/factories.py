"""Factories for every model. Rows, not mocks."""

from __future__ import annotations

import hashlib

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.models import Agent, AgentKind
from conversations.models import (
    Attachment,
    CannedResponse,
    Contact,
    Conversation,
    Direction,
    Message,
    QuarantinedMessage,
)
from departments.models import Department
from inboxes.models import Inbox, Security


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.test")
    password = factory.django.Password("correct horse battery staple")


class DepartmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Department

    name = factory.Sequence(lambda n: f"Department {n}")


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        skip_postgeneration_save = True

    kind = AgentKind.HUMAN
    user = factory.SubFactory(UserFactory)
    name = factory.LazyAttribute(lambda o: o.user.username.title() if o.user else "Agent")

    @factory.post_generation
    def departments(self, create, extracted, **kwargs):
        if create and extracted:
            self.departments.set(extracted)


class AIAgentFactory(AgentFactory):
    kind = AgentKind.AI
    user = None
    name = factory.Sequence(lambda n: f"Assistant {n}")
    ai_model = "test-model"
    ai_base_url = "http://127.0.0.1:9/v1"


class InboxFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Inbox

    address = factory.Sequence(lambda n: f"support{n}@switchboard.test")
    display_name = factory.Sequence(lambda n: f"Support {n}")
    department = factory.SubFactory(DepartmentFactory)
    imap_host = "127.0.0.1"
    imap_port = 993
    imap_security = Security.IMPLICIT_TLS
    imap_username = factory.LazyAttribute(lambda o: o.address)
    smtp_host = "127.0.0.1"
    smtp_port = 465
    smtp_security = Security.IMPLICIT_TLS


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    address = factory.Sequence(lambda n: f"customer{n}@example.test")
    name = factory.Sequence(lambda n: f"Customer {n}")


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    inbox = factory.SubFactory(InboxFactory)
    department = factory.LazyAttribute(lambda o: o.inbox.department)
    contact = factory.SubFactory(ContactFactory)
    subject = factory.Sequence(lambda n: f"Question {n}")


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    inbox = factory.LazyAttribute(lambda o: o.conversation.inbox)
    direction = Direction.IN
    message_id = factory.Sequence(lambda n: f"m{n}@example.test")
    header_message_id = factory.LazyAttribute(lambda o: o.message_id)
    from_address = factory.LazyAttribute(lambda o: o.conversation.contact.address)
    subject = factory.LazyAttribute(lambda o: o.conversation.subject)
    text = "Hello, I have a question."
    sent_at = factory.LazyFunction(timezone.now)


class AttachmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attachment

    message = factory.SubFactory(MessageFactory)
    file = factory.django.FileField(data=b"attachment bytes", filename="notes.txt")
    filename = "notes.txt"
    content_type = "text/plain"
    size = 16
    sha256 = hashlib.sha256(b"attachment bytes").hexdigest()


class CannedResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CannedResponse

    title = factory.Sequence(lambda n: f"Canned {n}")
    body = "Thanks for writing to us."


class QuarantinedMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QuarantinedMessage

    inbox = factory.SubFactory(InboxFactory)
    raw = factory.django.FileField(data=b"not really an email", filename="bad.eml")
    error = "Could not parse"
