"""Every API route against every kind of caller, from one table.

The table must name every route and method the URL resolver knows: a new route without a row
here fails `test_every_route_has_a_permission_case`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.api.conftest import World

pytestmark = pytest.mark.django_db

# Who succeeds, by kind of route. Everyone else named gets 404; anonymous and revoked get 401.
DEPARTMENT = {"alice": "ok", "maria": "ok", "bob": 404}  # something of department A
LISTED = {"alice": "ok", "maria": "ok", "bob": "ok-without"}  # a list: bob's lacks department A's row
PERSONAL = {"alice": "ok", "maria": 404, "bob": 404}  # alice's own thing
EVERYONE = {"alice": "ok", "maria": "ok", "bob": "ok"}  # the caller's own list or upload
AGENTS_ONLY = {"alice": "ok", "maria": 404, "bob": "ok"}  # about the calling agent; maria is none
MANAGERS = {"alice": 404, "maria": "ok", "bob": 404}
PUBLIC = {"alice": "ok", "maria": "ok", "bob": "ok", "anonymous": "ok"}  # a revoked token is refused even here


@dataclass
class Case:
    route: str
    method: str
    who: dict[str, Any]
    kwargs: Callable[[World], dict[str, Any]] = lambda w: {}
    body: Callable[[World], Any] = lambda w: None
    listed: Callable[[World], str] | None = None  # the id department A's row shows in a list
    query: Callable[[World], dict[str, Any]] = lambda w: {}
    multipart: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def conversation(w: World) -> dict[str, Any]:
    return {"conversation": w.conversation.public_id}



CASES = [
    Case("conversations", "get", LISTED, listed=lambda w: str(w.conversation.public_id)),
    Case("conversation", "get", DEPARTMENT, conversation),
    Case("assign", "post", DEPARTMENT, conversation, lambda w: {"agent": str(w.people.agent_a.public_id)}),
    Case("unassign", "post", DEPARTMENT, conversation),
    Case("transfer", "post", DEPARTMENT, conversation, lambda w: {"department": str(w.people.department_b.public_id)}),
    Case("status", "post", DEPARTMENT, conversation, lambda w: {"status": "closed"}),
    Case("priority", "post", DEPARTMENT, conversation, lambda w: {"priority": 3}),
    Case("subject", "post", DEPARTMENT, conversation, lambda w: {"subject": "Printer still on fire"}),
    Case("read", "post", DEPARTMENT, conversation),
    Case("read", "delete", DEPARTMENT, conversation),
    Case("messages", "get", DEPARTMENT, conversation),
    Case("reply", "post", DEPARTMENT, conversation, lambda w: {"text": "We are on it."}),
    Case("note", "post", DEPARTMENT, conversation, lambda w: {"text": "Call them back."}),
    Case("resend", "post", DEPARTMENT, lambda w: {"message": w.failed_reply.public_id}),
    Case("raw", "get", DEPARTMENT, lambda w: {"message": w.incoming.public_id}),
    Case("attachment", "get", DEPARTMENT, lambda w: {"attachment": w.attachment.public_id}),
    Case("uploads", "post", EVERYONE, multipart=True, body=lambda w: {"file": _file()}),
    Case("contacts", "get", LISTED, listed=lambda w: str(w.conversation.contact.public_id)),
    Case("contact", "get", DEPARTMENT, lambda w: {"contact": w.conversation.contact.public_id}),
    Case("contact", "patch", DEPARTMENT, lambda w: {"contact": w.conversation.contact.public_id},
         lambda w: {"name": "Ann C."}),
    Case("canned-responses", "get", LISTED, listed=lambda w: str(w.shared_canned.public_id)),
    Case("canned-responses", "post", EVERYONE, body=lambda w: {"title": "Hello", "body": "Hi {{ contact.name }}"}),
    Case("canned-response", "get", PERSONAL, lambda w: {"canned_response": w.personal_canned.public_id}),
    Case("canned-response", "patch", PERSONAL, lambda w: {"canned_response": w.personal_canned.public_id},
         lambda w: {"title": "Renamed"}),
    Case("canned-response", "delete", PERSONAL, lambda w: {"canned_response": w.personal_canned.public_id}),
    Case("canned-response-render", "get", DEPARTMENT, lambda w: {"canned_response": w.shared_canned.public_id},
         query=lambda w: {"conversation": str(w.conversation.public_id)}),
    Case("agents", "get", LISTED, listed=lambda w: str(w.people.agent_a.public_id)),
    Case("me", "get", AGENTS_ONLY),
    Case("presence", "post", AGENTS_ONLY, body=lambda w: {"presence": "away"}),
    Case("tokens", "get", EVERYONE),
    Case("tokens", "post", EVERYONE, body=lambda w: {"name": "export"}),
    Case("token", "delete", PERSONAL, lambda w: {"token": w.spare_token.public_id}),
    Case("manage-departments", "get", MANAGERS),
    Case("manage-departments", "post", MANAGERS, body=lambda w: {"name": "Sales"}),
    Case("manage-department", "get", MANAGERS, lambda w: {"department": w.people.department_a.public_id}),
    Case("manage-department", "patch", MANAGERS, lambda w: {"department": w.people.department_a.public_id},
         lambda w: {"default_capacity": 5}),
    Case("manage-agents", "get", MANAGERS),
    Case("manage-agents", "post", MANAGERS, body=lambda w: {"kind": "ai", "name": "Robo", "ai_model": "m"}),
    Case("manage-agent", "get", MANAGERS, lambda w: {"agent": w.people.agent_a.public_id}),
    Case("manage-agent", "patch", MANAGERS, lambda w: {"agent": w.people.agent_a.public_id},
         lambda w: {"capacity": 3}),
    Case("manage-inboxes", "get", MANAGERS),
    Case("manage-inboxes", "post", MANAGERS, body=lambda w: {
        "address": "sales@switchboard.test", "display_name": "Sales",
        "department": str(w.people.department_b.public_id), "imap_secret": "hunter2"}),
    Case("manage-inbox", "get", MANAGERS, lambda w: {"inbox": w.inbox.public_id}),
    Case("manage-inbox", "patch", MANAGERS, lambda w: {"inbox": w.inbox.public_id}, lambda w: {"poll_interval": 120}),
    Case("manage-inbox-status", "get", MANAGERS, lambda w: {"inbox": w.inbox.public_id}),
    Case("manage-inbox-test-connection", "post", MANAGERS, lambda w: {"inbox": w.inbox.public_id}),
    Case("manage-quarantine", "get", MANAGERS),
    Case("manage-quarantine-raw", "get", MANAGERS, lambda w: {"quarantined": w.quarantined.public_id}),
    Case("manage-quarantine-retry", "post", MANAGERS, lambda w: {"quarantined": w.quarantined.public_id}),
    Case("manage-quarantine-discard", "post", MANAGERS, lambda w: {"quarantined": w.quarantined.public_id}),
    Case("api-schema", "get", PUBLIC),
    Case("api-docs", "get", PUBLIC),
]


def _file() -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("hello.txt", b"hello", content_type="text/plain")


def api_routes() -> set[tuple[str, str]]:
    """Every (route name, method) under /api/, from the URL resolver itself."""
    found: set[tuple[str, str]] = set()

    def walk(patterns: list[Any], prefix: str, namespace: str) -> None:
        for pattern in patterns:
            here = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, here, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and here.startswith("api/"):
                view = pattern.callback.view_class
                for method in ("get", "post", "put", "patch", "delete"):
                    if method in view.http_method_names and hasattr(view, method):
                        found.add((pattern.name, method))

    walk(get_resolver().url_patterns, "", "")
    return found


def test_every_route_has_a_permission_case():
    assert api_routes() == {(case.route, case.method) for case in CASES}


def _url(case: Case, w: World) -> str:
    name = case.route if case.route.startswith("api-") else f"api:{case.route}"
    return reverse(name, kwargs=case.kwargs(w))


def _call(case: Case, w: World, who: str) -> Any:
    client = w.client(who)
    url, body = _url(case, w), case.body(w)
    if case.method == "get":
        return client.get(url, case.query(w))
    if case.multipart:
        return client.post(url, body, format="multipart")
    return getattr(client, case.method)(url, body, format="json")


def _ids(response: Any) -> set[str]:
    return {str(row["id"]) for row in response.json()["results"]}


ROLES = ["alice", "maria", "bob", "anonymous", "revoked"]


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.method}-{c.route}" for c in CASES])
def test_permission(case: Case, who: str, world: World):
    expected = case.who.get(who, 401)
    response = _call(case, world, who)

    if expected == 401:
        assert response.status_code == 401, response.content[:300]
    elif expected == 404:
        assert response.status_code == 404, response.content[:300]
    else:
        assert 200 <= response.status_code < 300, (response.status_code, response.content[:500])
        if case.listed:
            assert (case.listed(world) in _ids(response)) == (expected == "ok")
