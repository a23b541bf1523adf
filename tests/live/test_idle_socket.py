"""An agent's console socket that sat idle still hears the next event, from the real server."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from conversations.live import events
from tests.servers.asgi import AsgiServer, WebSocketClosed

# Well past the 20 s websocket ping and redis-py's old 5 s socket timeout: an agent reading a thread.
IDLE_SECONDS = 30


def _session_cookie(user) -> str:
    """The cookie a browser holds after signing in; the session row is in the shared database."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.mark.django_db(transaction=True)
def test_an_idle_console_socket_stays_open_and_hears_the_next_event(asgi_server: AsgiServer, people):
    socket = asgi_server.websocket("/ws/console/", cookie=_session_cookie(people.agent_a.user))
    assert socket.receive_json(timeout=10)["event"] == "hello"

    try:
        first = socket.receive_json(timeout=IDLE_SECONDS)
        if first is not None and first["event"] == "presence":  # the agent's own arrival online
            first = socket.receive_json(timeout=IDLE_SECONDS)
        assert first is None, "nothing was published yet"
    except WebSocketClosed as closed:
        pytest.fail(f"the idle socket was closed: {closed}\n{asgi_server.log()[-3000:]}")

    # Published from this process, as a worker would: through the layer, not through the server.
    events.publish("message.status", people.department_a.id, {"message": "m-1", "status": "sent"})
    events.flush()

    assert socket.receive_json(timeout=10) == {"event": "message.status",
                                               "payload": {"message": "m-1", "status": "sent"}}
    assert "TimeoutError" not in asgi_server.log(), asgi_server.log()[-3000:]
