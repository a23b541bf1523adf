"""How conversations, messages, contacts and agents look in the API: public ids, never keys."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from agents.models import Agent
from conversations.models import Attachment, Contact, Conversation, Message


# The read serializers below write their dicts by hand (to_representation): DRF's field-by-field
# path cost about half a millisecond a conversation, most of a 50-row page. Their fields stay
# declared, for the schema and as the list of what each one returns.
def when(value: Any) -> str | None:
    if value is None:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def ref(row: Any) -> dict[str, str] | None:
    return None if row is None else {"id": str(row.public_id), "name": row.name}


def addresses(values: Any) -> list[dict[str, str]]:
    return [{"name": v.get("name", ""), "address": v.get("address", "")} for v in values or () if isinstance(v, dict)]


class Ref(serializers.Serializer):
    """A related row by public id and name (department, agent, inbox)."""

    id = serializers.UUIDField(source="public_id", read_only=True)
    name = serializers.CharField(read_only=True)


class InboxRef(serializers.Serializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    address = serializers.EmailField(read_only=True)
    name = serializers.CharField(source="display_name", read_only=True)


class ContactSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = Contact
        fields = ["id", "address", "name", "created_at"]
        read_only_fields = ["address", "created_at"]

    def to_representation(self, contact: Contact) -> dict[str, Any]:
        return {"id": str(contact.public_id), "address": contact.address, "name": contact.name,
                "created_at": when(contact.created_at)}


class ConversationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    inbox = InboxRef(read_only=True)
    department = Ref(read_only=True)
    contact = ContactSerializer(read_only=True)
    assignee = Ref(read_only=True, allow_null=True)

    class Meta:
        model = Conversation
        fields = ["id", "subject", "status", "priority", "inbox", "department", "contact", "assignee",
                  "routing_reason", "archived", "created_at", "updated_at", "last_message_at", "closed_at"]
        read_only_fields = fields

    def to_representation(self, c: Conversation) -> dict[str, Any]:
        contact, inbox = c.contact, c.inbox
        return {
            "id": str(c.public_id), "subject": c.subject, "status": c.status, "priority": c.priority,
            "inbox": {"id": str(inbox.public_id), "address": inbox.address, "name": inbox.display_name},
            "department": ref(c.department),
            "contact": {"id": str(contact.public_id), "address": contact.address, "name": contact.name,
                        "created_at": when(contact.created_at)},
            "assignee": ref(c.assignee), "routing_reason": c.routing_reason, "archived": c.archived,
            "created_at": when(c.created_at), "updated_at": when(c.updated_at),
            "last_message_at": when(c.last_message_at), "closed_at": when(c.closed_at),
        }


class AttachmentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    download = serializers.SerializerMethodField()

    class Meta:
        model = Attachment
        fields = ["id", "filename", "content_type", "size", "sha256", "inline", "content_id", "download"]
        read_only_fields = fields

    def get_download(self, attachment: Attachment) -> str:
        return f"/api/attachments/{attachment.public_id}/"

    def to_representation(self, a: Attachment) -> dict[str, Any]:
        return {"id": str(a.public_id), "filename": a.filename, "content_type": a.content_type, "size": a.size,
                "sha256": a.sha256, "inline": a.inline, "content_id": a.content_id,
                "download": f"/api/attachments/{a.public_id}/"}


class Address(serializers.Serializer):
    name = serializers.CharField(allow_blank=True)
    address = serializers.CharField()


class MessageSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    author = Ref(read_only=True, allow_null=True)
    sender = serializers.SerializerMethodField()
    to = Address(many=True, read_only=True)
    cc = Address(many=True, read_only=True)
    bcc = Address(many=True, read_only=True)
    attachments = AttachmentSerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = ["id", "direction", "kind", "author", "sender", "to", "cc", "bcc", "subject", "text", "html",
                  "sent_at", "created_at", "delivery_status", "delivery_last_error", "priority", "is_automatic",
                  "automatic_reason", "new_participant", "display_name_has_address", "too_large", "attachments"]
        read_only_fields = fields

    def get_sender(self, message: Message) -> dict[str, str]:
        return {"name": message.from_name, "address": message.from_address}

    def to_representation(self, m: Message) -> dict[str, Any]:
        files = AttachmentSerializer()
        return {
            "id": str(m.public_id), "direction": m.direction, "kind": m.kind, "author": ref(m.author),
            "sender": {"name": m.from_name, "address": m.from_address}, "to": addresses(m.to),
            "cc": addresses(m.cc), "bcc": addresses(m.bcc), "subject": m.subject, "text": m.text, "html": m.html,
            "sent_at": when(m.sent_at), "created_at": when(m.created_at), "delivery_status": m.delivery_status,
            "delivery_last_error": m.delivery_last_error, "priority": m.priority, "is_automatic": m.is_automatic,
            "automatic_reason": m.automatic_reason, "new_participant": m.new_participant,
            "display_name_has_address": m.display_name_has_address, "too_large": m.too_large,
            "attachments": [files.to_representation(a) for a in m.attachments.all()],
        }


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True, read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]
        read_only_fields = fields

    def to_representation(self, c: Conversation) -> dict[str, Any]:
        messages = MessageSerializer()
        return {**super().to_representation(c), "messages": [messages.to_representation(m) for m in c.messages.all()]}


class AgentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    departments = Ref(many=True, read_only=True)
    load = serializers.IntegerField(read_only=True, help_text="Open conversations assigned to the agent now.")

    class Meta:
        model = Agent
        fields = ["id", "name", "kind", "presence", "presence_changed_at", "capacity", "enabled", "departments",
                  "load"]
        read_only_fields = fields


def public_ids(values: Any) -> list[str]:
    return [str(value.public_id) for value in values]
