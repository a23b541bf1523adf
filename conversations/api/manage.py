"""Managers' endpoints for departments and agents (everyone else gets 404)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import generics, serializers

from agents.models import Agent, AgentKind
from conversations.api.agents import with_load
from conversations.api.pagination import Cursor
from conversations.api.permissions import IsManager
from departments.models import Department


class ManagerView:
    permission_classes = [IsManager]
    pagination_class = Cursor
    lookup_field = "public_id"


class DepartmentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = Department
        fields = ["id", "name", "routing_strategy", "default_capacity", "created_at"]
        read_only_fields = ["created_at"]


class DepartmentList(ManagerView, generics.ListCreateAPIView):
    serializer_class = DepartmentSerializer
    queryset = Department.objects.all()


class DepartmentDetail(ManagerView, generics.RetrieveUpdateAPIView):
    serializer_class = DepartmentSerializer
    queryset = Department.objects.all()
    http_method_names = ["get", "patch"]
    lookup_url_kwarg = "department"


@extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
class DepartmentIds(serializers.Field):
    def to_representation(self, value: Any) -> list[str]:
        return [str(department.public_id) for department in value.all()]

    def to_internal_value(self, data: Any) -> list[Department]:
        ids = serializers.ListField(child=serializers.UUIDField()).to_internal_value(data)
        found = list(Department.objects.filter(public_id__in=ids))
        if len(found) != len(set(ids)):
            raise serializers.ValidationError("One of these is not a department.")
        return found


class ManagedAgentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    username = serializers.CharField(source="user.username", required=False, allow_null=True,
                                     help_text="A human agent's user account (it must exist).")
    departments = DepartmentIds(required=False)
    load = serializers.IntegerField(read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "kind", "name", "username", "departments", "capacity", "enabled", "presence", "load",
                  "ai_base_url", "ai_model", "ai_api_key", "ai_instructions", "created_at"]
        read_only_fields = ["presence", "created_at"]
        extra_kwargs = {"ai_api_key": {"write_only": True, "required": False}}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        username = data.pop("user", {}).get("username")
        if username:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise serializers.ValidationError({"username": [f"No user is called {username!r}."]})
            data["user"] = user
        kind = data.get("kind", self.instance.kind if self.instance else AgentKind.HUMAN)
        probe = Agent(**{**({"kind": self.instance.kind, "user": self.instance.user, "ai_model": self.instance.ai_model}
                            if self.instance else {}),
                         **{k: v for k, v in data.items() if k != "departments"}, "kind": kind})
        try:
            probe.clean()
        except Exception as error:
            raise serializers.ValidationError(getattr(error, "message_dict", {"detail": [str(error)]})) from None
        return data

    def create(self, data: dict[str, Any]) -> Agent:
        departments = data.pop("departments", [])
        agent = Agent.objects.create(**data)
        agent.departments.set(departments)
        return agent

    def update(self, agent: Agent, data: dict[str, Any]) -> Agent:
        departments = data.pop("departments", None)
        agent = super().update(agent, data)
        if departments is not None:
            agent.departments.set(departments)
        return agent


class AgentList(ManagerView, generics.ListCreateAPIView):
    serializer_class = ManagedAgentSerializer

    def get_queryset(self) -> Any:
        return with_load(Agent.objects.select_related("user"))


class AgentDetail(ManagerView, generics.RetrieveUpdateAPIView):
    serializer_class = ManagedAgentSerializer
    http_method_names = ["get", "patch"]
    lookup_url_kwarg = "agent"

    def get_queryset(self) -> Any:
        return with_load(Agent.objects.select_related("user"))
