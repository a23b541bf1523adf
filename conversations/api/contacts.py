"""Contacts: the customers of the conversations the caller may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations import actions
from conversations.api.pagination import Cursor
from conversations.api.permissions import actor, visible_contacts, visible_conversations
from conversations.api.serializers import ContactSerializer, ConversationSerializer
from conversations.models import Contact


class ContactList(generics.ListAPIView):
    serializer_class = ContactSerializer
    pagination_class = Cursor

    def get_queryset(self) -> QuerySet[Contact]:
        return visible_contacts(self.request)


class ContactDetailSerializer(ContactSerializer):
    conversations = ConversationSerializer(many=True, read_only=True, source="visible_conversations",
                                           help_text="Only the conversations you may see.")

    class Meta(ContactSerializer.Meta):
        fields = [*ContactSerializer.Meta.fields, "conversations"]

    def to_representation(self, contact: Contact) -> dict[str, Any]:
        rows = ConversationSerializer()
        return {**super().to_representation(contact),
                "conversations": [rows.to_representation(c) for c in contact.visible_conversations]}


class ContactUpdate(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True)


class ContactDetail(APIView):
    def _row(self, request: Request, contact: Any) -> Contact:
        conversations = visible_conversations(request).select_related("inbox", "department", "contact", "assignee")
        return get_object_or_404(visible_contacts(request).prefetch_related(
            Prefetch("conversations", queryset=conversations, to_attr="visible_conversations")), public_id=contact)

    @extend_schema(responses=ContactDetailSerializer)
    def get(self, request: Request, contact: Any) -> Response:
        return Response(ContactDetailSerializer(self._row(request, contact)).data)

    @extend_schema(request=ContactUpdate, responses=ContactDetailSerializer)
    def patch(self, request: Request, contact: Any) -> Response:
        """Correct a contact's name (their address is who they are and never changes)."""
        row = self._row(request, contact)
        data = ContactUpdate(data=request.data)
        data.is_valid(raise_exception=True)
        actions.rename_contact(row, data.validated_data["name"], by=actor(request))
        return Response(ContactDetailSerializer(self._row(request, contact)).data)
