"""Messages of a conversation: the list, replies, internal notes, a deliberate resend, the raw source."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations import actions
from conversations.api import canned, idempotency
from conversations.api.authentication import BotUser
from conversations.api.conversations import visible_conversation
from conversations.api.models import Upload
from conversations.api.pagination import Chronological
from conversations.api.permissions import actor, caller_agent, visible_conversations, visible_messages
from conversations.api.serializers import Address, MessageSerializer
from conversations.models import Message, Priority
from conversations.outgoing.replies import AttachmentUpload

IDEMPOTENCY = OpenApiParameter(
    idempotency.HEADER, str, OpenApiParameter.HEADER,
    description="Any unique string: the same key again returns the first request's message (200) "
                "instead of making another.")


class MessageList(generics.ListAPIView):
    """A conversation's messages and notes, oldest first."""

    serializer_class = MessageSerializer
    pagination_class = Chronological

    def get_queryset(self) -> QuerySet[Message]:
        conversation = get_object_or_404(visible_conversations(self.request), public_id=self.kwargs["conversation"])
        return conversation.messages.select_related("author").prefetch_related("attachments")


class Recipient(serializers.CharField):
    """An address, "Name <address>", or {"name", "address"}; checked by queue_reply."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            return Address(data=data).run_validation(data)
        return super().to_internal_value(data)


class ReplyInput(serializers.Serializer):
    to = serializers.ListField(child=Recipient(), required=False,
                               help_text="Empty: the conversation's contact.")
    cc = serializers.ListField(child=Recipient(), required=False)
    bcc = serializers.ListField(child=Recipient(), required=False)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    html = serializers.CharField(required=False, allow_blank=True, default="")
    attachments = serializers.ListField(child=serializers.UUIDField(), required=False, default=list,
                                        help_text="Ids of your uploads (POST /api/uploads/).")
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    canned_response = serializers.UUIDField(required=False, help_text="Its rendered body comes first.")


def _uploads(request: Request, ids: list[Any]) -> list[Upload]:
    owner = {"agent": request.user.agent} if isinstance(request.user, BotUser) else {"user": request.user}
    found = {row.public_id: row for row in Upload.objects.filter(public_id__in=ids, **owner)}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ValidationError({"attachments": [f"No such upload: {', '.join(missing)}."]})
    return [found[i] for i in ids]


def _text(request: Request, conversation: Any, data: dict[str, Any]) -> str:
    text = data["text"]
    if data.get("canned_response"):
        response = canned.usable(request).filter(public_id=data["canned_response"]).first()
        if response is None:
            raise ValidationError({"canned_response": ["No such canned response."]})
        body = canned.render(response.body, conversation, caller_agent(request))
        text = f"{body}\n\n{text}" if text.strip() else body
    return text


class Reply(APIView):
    @extend_schema(request=ReplyInput, parameters=[IDEMPOTENCY],
                   responses={201: MessageSerializer, 200: OpenApiResponse(MessageSerializer, "Idempotent replay.")})
    def post(self, request: Request, conversation: Any) -> Response:
        """Queue an email reply; it leaves through the inbox's server, threaded."""
        row = visible_conversation(request, conversation)
        data = ReplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data

        def make() -> Message:
            uploads = _uploads(request, values["attachments"])
            files = [AttachmentUpload(u.filename, u.file.read(), u.content_type) for u in uploads]
            message = actions.queue_reply(
                row, by=actor(request), text=_text(request, row, values), html=values["html"] or None,
                to=values.get("to"), cc=values.get("cc"), bcc=values.get("bcc"), attachments=files,
                priority=values.get("priority"))
            names = [u.file.name for u in uploads]
            Upload.objects.filter(pk__in=[u.pk for u in uploads]).delete()
            storage = uploads[0].file.storage if uploads else None
            transaction.on_commit(lambda: [storage.delete(name) for name in names])
            return message

        message, created = idempotency.once(request, make)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED if created else 200)


class NoteInput(serializers.Serializer):
    text = serializers.CharField()


class Note(APIView):
    @extend_schema(request=NoteInput, parameters=[IDEMPOTENCY], responses={201: MessageSerializer})
    def post(self, request: Request, conversation: Any) -> Response:
        """Add an internal note: never emailed, seen by the department."""
        row = visible_conversation(request, conversation)
        data = NoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        message, created = idempotency.once(
            request, lambda: actions.add_note(row, data.validated_data["text"], by=actor(request)))
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED if created else 200)


def visible_message(request: Request, public_id: Any) -> Message:
    return get_object_or_404(visible_messages(request).select_related("conversation", "author"), public_id=public_id)


class Resend(APIView):
    @extend_schema(request=None, responses={200: MessageSerializer})
    def post(self, request: Request, message: Any) -> Response:
        """Queue an uncertain or failed reply again, with the same Message-ID."""
        row = visible_message(request, message)
        if not actions.resend(row, by=actor(request)):
            raise ValidationError({"message": [f"Only an uncertain or failed reply can be resent; this one is "
                                               f"{row.delivery_status or 'not a reply'}."]})
        row.refresh_from_db()
        return Response(MessageSerializer(row).data)


class RawSource(APIView):
    @extend_schema(responses={(200, "message/rfc822"): OpenApiTypes.BINARY})
    def get(self, request: Request, message: Any) -> FileResponse:
        """The message exactly as it arrived (or as it left), as message/rfc822."""
        row = visible_message(request, message)
        if not row.raw:
            raise Http404("This message has no stored source.")
        return FileResponse(row.raw.open("rb"), as_attachment=True, filename=f"{row.public_id}.eml",
                            content_type="message/rfc822")
