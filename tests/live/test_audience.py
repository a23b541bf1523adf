"""Rechecking a web process's sockets costs the same few queries however many there are."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.live.audience import listeners_for
from tests import factories


def signed_in_sockets(department, count: int, prefix: str) -> list[tuple[int, str]]:
    sockets = []
    for number in range(count):
        agent = factories.AgentFactory(user__username=f"{prefix}{number}", departments=[department])
        client = Client()
        client.force_login(agent.user)
        sockets.append((agent.user.pk, client.cookies[settings.SESSION_COOKIE_NAME].value))
    return sockets


def test_the_recheck_of_3_or_40_sockets_takes_the_same_queries_and_says_who_may_listen(db):
    support, billing = factories.DepartmentFactory(name="Support"), factories.DepartmentFactory(name="Billing")
    few, many = signed_in_sockets(support, 3, "few"), signed_in_sockets(billing, 40, "many")
    manager = factories.UserFactory(username="boss", is_staff=True)
    client = Client()
    client.force_login(manager)
    boss = (manager.pk, client.cookies[settings.SESSION_COOKIE_NAME].value)

    with CaptureQueriesContext(connection) as small:
        listeners_for(few)
    with CaptureQueriesContext(connection) as large:
        heard = listeners_for([*many, boss, (few[0][0], "not-a-session")])

    assert len(large) == len(small)
    assert heard[many[0]].departments == frozenset({billing.pk})
    assert heard[many[0]].public_ids == {billing.pk: str(billing.public_id)}
    assert heard[boss].departments is None
    assert set(heard[boss].public_ids) == {support.pk, billing.pk}
    assert heard[(few[0][0], "not-a-session")] is None  # a session that is not theirs (or ended)
