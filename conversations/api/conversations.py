"""Conversations: the list (filters, search, cursor pages), the detail, and the actions on one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from conversations import actions
from conversations.api import search
from conversations.api.pagination import ByLastActivity
from conversations.api.permissions import actor, caller_agent, visible_conversations
from conversations.api.serializers import ConversationDetailSerializer, ConversationSerializer
from conversations.models import Attachment, Conversation, ConversationStatus, Message, Priority
from departments.models import Department

VIEWS = ("all", "mine", "unassigned", "department")
LIST_PARAMETERS = [
    OpenApiParameter("view", str, enum=VIEWS, description="all (default) | mine | unassigned | department "
                     "(with `department`)."),
    OpenApiParameter("department", OpenApiTypes.UUID, description="A department's id."),
    OpenApiParameter("status", str, enum=ConversationStatus.values),
    OpenApiParameter("priority", int, enum=Priority.values),
    OpenApiParameter("inbox", OpenApiTypes.UUID, description="An inbox's id."),
    OpenApiParameter("assignee", OpenApiTypes.UUID, description="An agent's id."),
    OpenApiParameter("contact", OpenApiTypes.UUID, description="A contact's id."),
    OpenApiParameter("updated_since", OpenApiTypes.DATETIME, description="Changed at or after (ISO 8601)."),
    OpenApiParameter("q", str, description="Search subject, contact address and name, and message text."),
]


# What a page of the list reads: the columns ConversationSerializer shows, and no others. An
# inbox row carries its whole mail set-up and a conversation its threading state; loading them
# for 50 rows cost more than the queries.
LISTED_COLUMNS = (
    "id", "public_id", "subject", "status", "priority", "routing_reason", "archived", "created_at", "updated_at",
    "last_message_at", "closed_at", "inbox__public_id", "inbox__address", "inbox__display_name",
    "department__public_id", "department__name", "contact__public_id", "contact__address", "contact__name",
    "contact__created_at", "assignee__public_id", "assignee__name",
)


def uuid_param(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name)
    if not value:
        if required:
            raise ValidationError({name: ["This parameter is required."]})
        return None
    return _uuid(value, name)


def _uuid(value: str, field: str) -> str:
    try:
        return str(serializers.UUIDField().to_internal_value(value))
    except serializers.ValidationError:
        raise ValidationError({field: [f"{value!r} is not an id."]}) from None


def filter_conversations(request: Request, rows: QuerySet[Conversation]) -> QuerySet[Conversation]:
    params = request.query_params
    view = params.get("view", "all")
    if view not in VIEWS:
        raise ValidationError({"view": [f"Use one of {', '.join(VIEWS)}."]})
    if view == "mine":
        agent = caller_agent(request)
        rows = rows.filter(assignee=agent) if agent else rows.none()
    elif view == "unassigned":
        rows = rows.filter(assignee__isnull=True)
    if params.get("department"):
        rows = rows.filter(department__public_id=_uuid(params["department"], "department"))
    elif view == "department":
        raise ValidationError({"department": ["Name the department to view."]})
    if params.get("status"):
        if params["status"] not in ConversationStatus.values:
            raise ValidationError({"status": [f"Use one of {', '.join(ConversationStatus.values)}."]})
        rows = rows.filter(status=params["status"])
    if params.get("priority"):
        if params["priority"] not in {str(v) for v in Priority.values}:
            raise ValidationError({"priority": [f"Use one of {', '.join(map(str, Priority.values))}."]})
        rows = rows.filter(priority=int(params["priority"]))
    for name, lookup in (("inbox", "inbox__public_id"), ("assignee", "assignee__public_id"),
                         ("contact", "contact__public_id")):
        if params.get(name):
            rows = rows.filter(**{lookup: _uuid(params[name], name)})
    if params.get("updated_since"):
        since = parse_datetime(params["updated_since"])
        if since is None:
            raise ValidationError({"updated_since": ["Use an ISO 8601 date and time."]})
        rows = rows.filter(updated_at__gte=since)
    if params.get("q"):
        rows = search.search(rows, params["q"])
    return rows


class ConversationList(generics.ListAPIView):
    """Conversations the caller may see, most recent activity first."""

    serializer_class = ConversationSerializer
    pagination_class = ByLastActivity

    @extend_schema(parameters=LIST_PARAMETERS)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Conversation]:
        rows = (visible_conversations(self.request).select_related("inbox", "department", "contact", "assignee")
                .only(*LISTED_COLUMNS))
        return filter_conversations(self.request, rows)


def visible_conversation(request: Request, public_id: Any) -> Conversation:
    return get_object_or_404(visible_conversations(request).select_related(
        "inbox", "department", "contact", "assignee"), public_id=public_id)


class ConversationDetail(APIView):
    """One conversation with all its messages and their attachments."""

    @extend_schema(responses=ConversationDetailSerializer)
    def get(self, request: Request, conversation: Any) -> Response:
        messages = Message.objects.select_related("author").prefetch_related(
            Prefetch("attachments", queryset=Attachment.objects.order_by("id"))).order_by("created_at", "id")
        row = get_object_or_404(visible_conversations(request).select_related(
            "inbox", "department", "contact", "assignee").prefetch_related(Prefetch("messages", queryset=messages)),
            public_id=conversation)
        return Response(ConversationDetailSerializer(row).data)


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------
class AssignInput(serializers.Serializer):
    agent = serializers.UUIDField(required=False, allow_null=True,
                                  help_text="The agent to assign; empty: the caller.")
    expected_assignee = serializers.UUIDField(
        required=False, allow_null=True,
        help_text="Assign only if the conversation is still held by this agent (null: still unassigned). "
                  "Assigning to yourself expects it unassigned unless you say otherwise. Lost: 409.")


class ConflictBody(serializers.Serializer):
    detail = serializers.CharField()
    conversation = ConversationSerializer()


def _agent(public_id: Any, field: str) -> Agent:
    found = Agent.objects.filter(public_id=public_id).first()
    if found is None:
        raise ValidationError({field: ["No such agent."]})
    return found


class Assign(APIView):
    @extend_schema(request=AssignInput, responses={200: ConversationSerializer, 409: ConflictBody})
    def post(self, request: Request, conversation: Any) -> Response:
        row = visible_conversation(request, conversation)
        data = AssignInput(data=request.data)
        data.is_valid(raise_exception=True)
        me = caller_agent(request)
        agent = _agent(data.validated_data["agent"], "agent") if data.validated_data.get("agent") else me
        if agent is None:
            raise ValidationError({"agent": ["You are not an agent: name the agent to assign."]})
        if "expected_assignee" in data.validated_data:
            expected_id = data.validated_data["expected_assignee"]
            expected = _agent(expected_id, "expected_assignee") if expected_id else None
        else:
            expected = None if agent == me else actions.ANYONE
        row = actions.assign(row, agent, by=actor(request), expected_assignee=expected)
        return Response(ConversationSerializer(row).data)


class Unassign(APIView):
    @extend_schema(request=None, responses=ConversationSerializer)
    def post(self, request: Request, conversation: Any) -> Response:
        row = actions.unassign(visible_conversation(request, conversation), by=actor(request))
        return Response(ConversationSerializer(row).data)


class TransferInput(serializers.Serializer):
    department = serializers.UUIDField()


def _act(request: Request, conversation: Any, shape: type[serializers.Serializer],
         act: Callable[[Conversation, dict[str, Any]], Conversation]) -> Response:
    """The shape of every one-field action: the caller may see it, the input is valid, the action
    runs, and the conversation comes back as it is now."""
    row = visible_conversation(request, conversation)
    data = shape(data=request.data)
    data.is_valid(raise_exception=True)
    return Response(ConversationSerializer(act(row, data.validated_data)).data)


def _department(public_id: Any) -> Department:
    found = Department.objects.filter(public_id=public_id).first()
    if found is None:
        raise ValidationError({"department": ["No such department."]})
    return found


class Transfer(APIView):
    @extend_schema(request=TransferInput, responses=ConversationSerializer)
    def post(self, request: Request, conversation: Any) -> Response:
        return _act(request, conversation, TransferInput, lambda row, data: actions.transfer(
            row, _department(data["department"]), by=actor(request)))


class StatusInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=ConversationStatus.choices)


class SetStatus(APIView):
    @extend_schema(request=StatusInput, responses=ConversationSerializer)
    def post(self, request: Request, conversation: Any) -> Response:
        return _act(request, conversation, StatusInput,
                    lambda row, data: actions.set_status(row, data["status"], by=actor(request)))


class PriorityInput(serializers.Serializer):
    priority = serializers.ChoiceField(choices=Priority.choices)


class SetPriority(APIView):
    @extend_schema(request=PriorityInput, responses=ConversationSerializer)
    def post(self, request: Request, conversation: Any) -> Response:
        return _act(request, conversation, PriorityInput,
                    lambda row, data: actions.set_priority(row, data["priority"], by=actor(request)))


class SubjectInput(serializers.Serializer):
    subject = serializers.CharField(max_length=998)


class SetSubject(APIView):
    @extend_schema(request=SubjectInput, responses=ConversationSerializer)
    def post(self, request: Request, conversation: Any) -> Response:
        return _act(request, conversation, SubjectInput,
                    lambda row, data: actions.set_subject(row, data["subject"], by=actor(request)))
