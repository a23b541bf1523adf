"""The one permission rule: agents see their departments' conversations; managers see all."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from agents.models import Agent


def is_manager(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def department_ids_for(user: AbstractBaseUser | AnonymousUser) -> set[int] | None:
    """The departments a user may see; None means every department (a manager)."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if is_manager(user):
        return None
    agent = getattr(user, "agent", None)  # a bot token's user is its agent's stand-in
    if agent is None:
        return set()
    return set(agent.departments.values_list("id", flat=True))


def department_ids_for_users(users: Iterable[AbstractBaseUser]) -> dict[int, set[int] | None]:
    """The same rule for many signed-in users (accounts, not bot tokens) at once, in one query:
    by user id."""
    users = list(users)
    allowed: dict[int, set[int] | None] = {
        user.pk: None if is_manager(user) else set() for user in users if user.is_active}
    agents = [pk for pk, value in allowed.items() if value is not None]
    if agents:
        through = Agent.departments.through
        for user_id, department_id in (through.objects.filter(agent__user_id__in=agents)
                                       .values_list("agent__user_id", "department_id")):
            allowed[user_id].add(department_id)
    for user in users:
        allowed.setdefault(user.pk, set())
    return allowed
