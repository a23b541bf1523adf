"""Canned responses: shared ones of the caller's departments, and personal ones."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api import canned
from conversations.api.conversations import uuid_param
from conversations.api.pagination import Cursor
from conversations.api.permissions import caller_agent, manager, visible_conversations
from conversations.api.serializers import Ref
from conversations.models import CannedResponse
from departments.models import Department


class CannedResponseSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    department = Ref(read_only=True, allow_null=True)
    department_id = serializers.UUIDField(write_only=True, required=False, allow_null=True,
                                          help_text="Managers: share it with a department. Empty: personal.")
    personal = serializers.SerializerMethodField()

    class Meta:
        model = CannedResponse
        fields = ["id", "title", "body", "department", "department_id", "personal", "updated_at"]
        read_only_fields = ["updated_at"]

    def get_personal(self, response: CannedResponse) -> bool:
        return response.owner_id is not None


def _department(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """A manager may share a response; everyone else's are personal."""
    public_id = data.pop("department_id", None)
    if public_id is None:
        return {} if manager(request) else {"owner": request.user}
    if not manager(request):
        raise ValidationError({"department_id": ["Only managers share canned responses with a department."]})
    department = Department.objects.filter(public_id=public_id).first()
    if department is None:
        raise ValidationError({"department_id": ["No such department."]})
    return {"department": department, "owner": None}


class CannedResponseList(generics.ListCreateAPIView):
    serializer_class = CannedResponseSerializer
    pagination_class = Cursor

    def get_queryset(self) -> QuerySet[CannedResponse]:
        return canned.usable(self.request)

    def perform_create(self, serializer: CannedResponseSerializer) -> None:
        extra = _department(self.request, serializer.validated_data)
        serializer.save(created_by=self.request.user if self.request.user.pk else None, **extra)


def _editable(request: Request, public_id: Any) -> CannedResponse:
    row = get_object_or_404(canned.usable(request), public_id=public_id)
    if row.owner_id != request.user.pk and not manager(request):
        raise NotFound()  # a shared response is the managers' to change
    return row


class CannedResponseDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = CannedResponseSerializer
    http_method_names = ["get", "patch", "delete"]

    def get_object(self) -> CannedResponse:
        if self.request.method == "GET":
            return get_object_or_404(canned.usable(self.request), public_id=self.kwargs["canned_response"])
        return _editable(self.request, self.kwargs["canned_response"])

    def perform_update(self, serializer: CannedResponseSerializer) -> None:
        extra = _department(self.request, serializer.validated_data) if "department_id" in self.request.data else {}
        serializer.save(**extra)


class Rendered(serializers.Serializer):
    text = serializers.CharField()


class RenderCannedResponse(APIView):
    @extend_schema(parameters=[OpenApiParameter("conversation", OpenApiTypes.UUID, required=True)],
                   responses=Rendered)
    def get(self, request: Request, canned_response: Any) -> Response:
        """The body with {{ contact.name }}, {{ agent.name }}, {{ inbox.name }} and {{ conversation.id }} filled in."""
        row = get_object_or_404(canned.usable(request), public_id=canned_response)
        conversation = get_object_or_404(visible_conversations(request).select_related("contact", "inbox"),
                                         public_id=uuid_param(request, "conversation", required=True))
        return Response({"text": canned.render(row.body, conversation, caller_agent(request))})

