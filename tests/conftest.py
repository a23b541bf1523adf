"""Shared fixtures: real Redis (embedded or REDIS_URL), media in a temporary folder,
and the three people of every permission test."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.conf import settings

from config import embedded_redis
from tests import factories

pytest_plugins = ["tests.servers.asgi", "tests.servers.dovecot", "tests.servers.smtp", "tests.servers.worker"]


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The real Redis the suite talks to; the embedded one is started for the session."""
    process = embedded_redis.start(settings.REDIS_SOCKET, persist=False) if settings.REDIS_EMBEDDED else None
    from config.redis import get_redis

    get_redis().flushdb()
    yield get_redis()
    embedded_redis.stop(process)


@pytest.fixture(autouse=True)
def media_root(tmp_path, settings):
    """Every test stores raw mail and attachments under its own storage root."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@dataclass
class People:
    """An agent of department A, an agent of department B, and a manager who sees everything."""

    department_a: object
    department_b: object
    agent_a: object
    agent_b: object
    manager: object


@pytest.fixture
def people(db) -> People:
    department_a = factories.DepartmentFactory(name="Department A")
    department_b = factories.DepartmentFactory(name="Department B")
    agent_a = factories.AgentFactory(user__username="alice", name="Alice", departments=[department_a])
    agent_b = factories.AgentFactory(user__username="bob", name="Bob", departments=[department_b])
    manager = factories.UserFactory(username="maria", is_staff=True, is_superuser=True)
    return People(department_a, department_b, agent_a, agent_b, manager)
