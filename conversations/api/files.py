"""Uploads for replies, and attachment downloads that never render in the agent's browser."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.authentication import BotUser
from conversations.api.models import Upload
from conversations.api.permissions import departments
from conversations.models import Attachment
from inboxes.mailformat.headers import header_safe

# Shown inline when asked: formats a browser decodes as pictures only, never as a document
# or script (SVG is XML with scripts, so it downloads like everything else).
RASTER_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"}
SANDBOX = "default-src 'none'; img-src 'self'; style-src 'none'; sandbox"


class UploadSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = Upload
        fields = ["id", "filename", "content_type", "size", "created_at"]
        read_only_fields = fields


class UploadInput(serializers.Serializer):
    file = serializers.FileField()


class UploadCreate(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": UploadInput}, responses={201: UploadSerializer})
    def post(self, request: Request) -> Response:
        """Upload a file to attach to a reply (by its id); only you can attach it."""
        data = UploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        file = data.validated_data["file"]
        limit = settings.API_UPLOAD_MAX_BYTES
        if file.size > limit:
            raise ValidationError({"file": [f"{file.name} is {file.size} bytes; at most {limit} are allowed."]})
        owner = {"agent": request.user.agent} if isinstance(request.user, BotUser) else {"user": request.user}
        row = Upload(filename=header_safe(file.name)[:255] or "attachment", size=file.size,
                     content_type=header_safe(file.content_type or "application/octet-stream")[:255], **owner)
        row.file.save("upload", file, save=False)
        row.save()
        return Response(UploadSerializer(row).data, status=status.HTTP_201_CREATED)


class AttachmentDownload(APIView):
    @extend_schema(parameters=[OpenApiParameter("inline", bool, description="Show a raster image inline; "
                                                "anything else downloads regardless.")],
                   responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, attachment: Any) -> FileResponse:
        """An attachment's bytes, as a download."""
        allowed = departments(request)
        rows = Attachment.objects.all()
        if allowed is not None:
            rows = rows.filter(message__conversation__department_id__in=allowed)
        row = get_object_or_404(rows, public_id=attachment)
        content_type = row.content_type.split(";")[0].strip().lower()
        raster = content_type in RASTER_IMAGES
        inline = raster and request.query_params.get("inline") in {"1", "true", "yes"}
        response = FileResponse(row.file.open("rb"), as_attachment=not inline, filename=row.filename or "attachment",
                                content_type=content_type if raster else "application/octet-stream")
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = SANDBOX
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        return response
