"""The one permission rule, as the API applies it: a conversation outside the caller's
departments does not exist for them (404, never 403); managers see all."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from agents.models import Agent
from conversations.api.authentication import BotUser
from conversations.models import Contact, Conversation, Message
from conversations.permissions import department_ids_for, is_manager


def departments(request: Request) -> set[int] | None:
    """The caller's departments, once per request; None: every department."""
    if not hasattr(request, "_switchboard_departments"):
        request._switchboard_departments = department_ids_for(request.user)
    return request._switchboard_departments


def visible_conversations(request: Request) -> QuerySet[Conversation]:
    allowed = departments(request)
    rows = Conversation.objects.all()
    return rows if allowed is None else rows.filter(department_id__in=allowed)


def visible_messages(request: Request) -> QuerySet[Message]:
    allowed = departments(request)
    rows = Message.objects.all()
    return rows if allowed is None else rows.filter(conversation__department_id__in=allowed)


def visible_contacts(request: Request) -> QuerySet[Contact]:
    allowed = departments(request)
    if allowed is None:
        return Contact.objects.all()
    return Contact.objects.filter(pk__in=Conversation.objects.filter(department_id__in=allowed).values("contact_id"))


def caller_agent(request: Request) -> Agent | None:
    return getattr(request.user, "agent", None)


def actor(request: Request) -> Any:
    """Who acts, for conversations.actions: a bot token's agent, or the signed-in user."""
    return request.user.agent if isinstance(request.user, BotUser) else request.user


def manager(request: Request) -> bool:
    return not isinstance(request.user, BotUser) and is_manager(request.user)


class IsManager(BasePermission):
    """Managers' endpoints: for anyone else they do not exist."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False  # 401 from the authentication classes
        if not manager(request):
            raise NotFound()
        return True


class IsPerson(BasePermission):
    """Endpoints about a person's own things (tokens, personal canned responses): not for bots."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        if isinstance(request.user, BotUser):
            raise NotFound()
        return True
