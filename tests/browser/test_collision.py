"""Two agents in one conversation: each sees the other viewing and typing, and the second to send is asked first."""

from __future__ import annotations

import pytest

from conversations.models import Direction, MessageKind
from tests import factories
from tests.browser.conftest import screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_second_to_reply_sees_the_first_and_is_asked(new_page, live_console, people):
    carol = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Two at once")
    factories.MessageFactory(conversation=conversation, text="Anyone there?")
    alice_page, carol_page = new_page(), new_page()
    sign_in(alice_page, "alice")
    sign_in(carol_page, carol.user.username)
    for page in (alice_page, carol_page):
        page.goto(f"/c/{conversation.public_id}/")
        page.wait_for_selector("#live-state.ok")

    carol_page.locator("#collision .colleague", has_text="Alice is viewing").wait_for(timeout=30_000)
    carol_page.locator("#composer-text").fill("I will take this one")
    alice_page.locator("#collision .colleague", has_text="Carol is typing").wait_for(timeout=10_000)

    alice_page.locator("#composer-text").fill("Hello from Alice")
    alice_page.get_by_role("button", name="Send", exact=True).click()
    alice_page.locator(".message.outgoing", has_text="Hello from Alice").wait_for()

    carol_page.get_by_role("button", name="Send", exact=True).click()
    warning = carol_page.locator("#collision-warning")
    warning.wait_for()
    assert "Since you opened this conversation, 1 message was added" in warning.inner_text()
    assert "Alice" in warning.inner_text()
    assert "Hello from Alice" in warning.inner_text()
    screenshot(carol_page, "collision")
    replies = conversation.messages.filter(direction=Direction.OUT, kind=MessageKind.EMAIL)
    assert replies.count() == 1  # nothing of Carol's left yet

    assert carol_page.locator("#composer-text").input_value() == "I will take this one"  # nothing lost
    carol_page.get_by_role("button", name="Send anyway", exact=True).click()
    carol_page.locator(".message.outgoing", has_text="I will take this one").wait_for()
    assert replies.count() == 2
