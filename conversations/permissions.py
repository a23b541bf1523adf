"""The one permission rule: agents see their departments' conversations; managers see all."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from conversations.models import Conversation


def is_manager(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def department_ids_for(user: AbstractBaseUser | AnonymousUser) -> set[int] | None:
    """The departments a user may see; None means every department (a manager)."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if is_manager(user):
        return None
    agent = getattr(user, "agent", None)
    if agent is None:
        return set()
    return set(agent.departments.values_list("id", flat=True))


def visible_conversations(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Conversation]:
    departments = department_ids_for(user)
    conversations = Conversation.objects.all()
    if departments is None:
        return conversations
    return conversations.filter(department_id__in=departments)
