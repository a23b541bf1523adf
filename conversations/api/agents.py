"""Agents: me (presence, capacity, departments), my colleagues with presence and load; presence set."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent, Presence
from conversations import actions
from conversations.api.pagination import Cursor
from conversations.api.permissions import actor, caller_agent, departments
from conversations.api.serializers import AgentSerializer
from conversations.models import ConversationStatus


def with_load(rows: QuerySet[Agent]) -> QuerySet[Agent]:
    open_now = Q(conversations__status=ConversationStatus.OPEN)
    return rows.annotate(load=Count("conversations", filter=open_now)).prefetch_related("departments")


def _me(request: Request) -> Agent:
    agent = caller_agent(request)
    if agent is None:
        raise NotFound("You are not an agent.")
    return agent


class Me(APIView):
    @extend_schema(responses=AgentSerializer)
    def get(self, request: Request) -> Response:
        return Response(AgentSerializer(with_load(Agent.objects.filter(pk=_me(request).pk)).get()).data)


class PresenceInput(serializers.Serializer):
    presence = serializers.ChoiceField(choices=Presence.choices)


class SetPresence(APIView):
    @extend_schema(request=PresenceInput, responses=AgentSerializer)
    def post(self, request: Request) -> Response:
        data = PresenceInput(data=request.data)
        data.is_valid(raise_exception=True)
        agent = actions.set_presence(_me(request), data.validated_data["presence"], by=actor(request))
        return Response(AgentSerializer(with_load(Agent.objects.filter(pk=agent.pk)).get()).data)


class Colleagues(generics.ListAPIView):
    """The agents of my departments (every agent, for a manager), with presence and load."""

    serializer_class = AgentSerializer
    pagination_class = Cursor

    def get_queryset(self) -> QuerySet[Agent]:
        allowed = departments(self.request)
        rows = Agent.objects.all()
        if allowed is not None:
            rows = rows.filter(pk__in=Agent.objects.filter(departments__in=allowed).values("pk"))
        return with_load(rows)
