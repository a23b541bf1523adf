"""Managers' quarantine: the mail that failed to import, its raw bytes, retry and discard."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.conversations import uuid_param
from conversations.api.pagination import Cursor
from conversations.api.permissions import IsManager
from conversations.incoming import ingest
from conversations.models import QuarantinedMessage, QuarantineStatus


class QuarantinedSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    inbox = serializers.UUIDField(source="inbox.public_id", read_only=True)
    message = serializers.SerializerMethodField()
    conversation = serializers.SerializerMethodField()

    class Meta:
        model = QuarantinedMessage
        fields = ["id", "inbox", "status", "error", "details", "raw_size", "imap_folder", "imap_uid", "created_at",
                  "resolved_at", "message", "conversation"]
        read_only_fields = fields

    def get_message(self, row: QuarantinedMessage) -> str | None:
        return str(row.message.public_id) if row.message_id else None

    def get_conversation(self, row: QuarantinedMessage) -> str | None:
        return str(row.message.conversation.public_id) if row.message_id else None


def _rows() -> QuerySet[QuarantinedMessage]:
    return QuarantinedMessage.objects.select_related("inbox", "message__conversation")


class QuarantineList(generics.ListAPIView):
    serializer_class = QuarantinedSerializer
    permission_classes = [IsManager]
    pagination_class = Cursor

    @extend_schema(parameters=[OpenApiParameter("inbox", OpenApiTypes.UUID),
                               OpenApiParameter("status", str, enum=QuarantineStatus.values)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[QuarantinedMessage]:
        rows = _rows()
        inbox = uuid_param(self.request, "inbox")
        if inbox:
            rows = rows.filter(inbox__public_id=inbox)
        if self.request.query_params.get("status"):
            rows = rows.filter(status=self.request.query_params["status"])
        return rows


class QuarantineRaw(APIView):
    permission_classes = [IsManager]

    @extend_schema(responses={(200, "message/rfc822"): OpenApiTypes.BINARY})
    def get(self, request: Request, quarantined: Any) -> FileResponse:
        row = get_object_or_404(QuarantinedMessage, public_id=quarantined)
        if not row.raw:
            raise Http404("Nothing was stored.")
        return FileResponse(row.raw.open("rb"), as_attachment=True, filename=f"{row.public_id}.eml",
                            content_type="message/rfc822")


class QuarantineRetry(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=None, responses=QuarantinedSerializer)
    def post(self, request: Request, quarantined: Any) -> Response:
        """Import it again (after a fix): it becomes a message, or stays held with the new error."""
        row = get_object_or_404(QuarantinedMessage, public_id=quarantined)
        ingest.retry_quarantined(row.pk)
        return Response(QuarantinedSerializer(_rows().get(pk=row.pk)).data)


class QuarantineDiscard(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=None, responses=QuarantinedSerializer)
    def post(self, request: Request, quarantined: Any) -> Response:
        row = get_object_or_404(QuarantinedMessage, public_id=quarantined)
        ingest.discard_quarantined(row.pk)
        return Response(QuarantinedSerializer(_rows().get(pk=row.pk)).data)
