"""API tokens: `Authorization: Bearer sb_…`, a personal token (a user) or a bot token (one Agent)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from agents.models import Agent
from conversations.api.models import ApiToken, digest

# last_used_at is written at most this often per token: not a write on every request.
LAST_USED_GRANULARITY = dt.timedelta(minutes=1)


class BotUser:
    """request.user for a bot token: the agent's permissions (its departments), never a manager's."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = id = None

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def get_username(self) -> str:
        return self.agent.name

    def __str__(self) -> str:
        return f"bot {self.agent.name}"


class TokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send one token: Authorization: Bearer <token>.")
        secret = header[1].decode(errors="replace")
        token = (ApiToken.objects.select_related("user", "agent", "user__agent")
                 .filter(secret_sha256=digest(secret), revoked_at__isnull=True).first())
        if token is None:
            raise exceptions.AuthenticationFailed("This token is unknown or was revoked.")
        user = self._caller(token)
        self._touch(token)
        return user, token

    @staticmethod
    def _caller(token: ApiToken) -> Any:
        if token.agent_id:
            if not token.agent.enabled:
                raise exceptions.AuthenticationFailed("This token's agent is disabled.")
            return BotUser(token.agent)
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is inactive.")
        return token.user

    @staticmethod
    def _touch(token: ApiToken) -> None:
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)

    def authenticate_header(self, request: Request) -> str:
        # A WWW-Authenticate header makes DRF answer 401 (not 403) to a caller without credentials.
        return 'Bearer realm="api"'
