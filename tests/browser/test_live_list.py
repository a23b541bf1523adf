"""The list moves live, but not under an agent who is scrolling it; notifications carry text, not markup."""

from __future__ import annotations

import pytest

from conversations import actions
from tests import factories
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

RECORD_NOTIFICATIONS = """
window.__notes = [];
window.Notification = class {
  constructor(title, options) { window.__notes.push({title: title, body: (options || {}).body}); }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
localStorage.setItem("switchboard.notify", "1");
"""


def test_an_assignment_notifies_with_the_subject_as_text(new_page, live_console, people):
    subject = "<img src=x onerror=alert(1)> Urgent & <b>bold</b>"
    people.department_a.routing_strategy = "manual"  # so that only the manager assigns it, below
    people.department_a.save()
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject=subject)
    factories.MessageFactory(conversation=conversation)
    page = new_page()
    page.add_init_script(RECORD_NOTIFICATIONS)
    sign_in(page, "alice")
    page.goto("/?view=departments")
    page.wait_for_selector("#live-state.ok")
    actions.assign(conversation, people.agent_a, by=people.manager)
    page.wait_for_function("() => window.__notes.length > 0", timeout=15_000)
    assert page.evaluate("() => window.__notes") == [{"title": "Assigned to you", "body": subject}]
    assert page.errors == []
    assert page.dialogs == []


def test_a_scrolling_agent_gets_a_banner_not_a_jumping_list(new_page, live_console, people):
    inbox = factories.InboxFactory(department=people.department_a)
    rows = [factories.ConversationFactory(inbox=inbox, subject=f"Question {n}") for n in range(40)]
    page = new_page(viewport={"width": 1200, "height": 600})
    sign_in(page, "alice")
    page.goto("/?view=departments")
    page.wait_for_selector("#live-state.ok")
    page.evaluate("() => { document.querySelector('#list').dataset.marker = 'before'; "
                  "document.querySelector('.list-pane').scrollTop = 400; }")
    actions.set_priority(rows[0], 3, by=people.manager)
    page.locator("#list-banner").wait_for(state="visible")
    assert page.evaluate("() => document.querySelector('#list').dataset.marker") == "before"
    page.get_by_role("button", name="New activity: show it").click()
    page.wait_for_function("() => !document.querySelector('#list').dataset.marker")
    assert page.locator("#rows .priority-3").count() == 1

    page.evaluate("() => { document.querySelector('.list-pane').scrollTop = 0; document.activeElement.blur(); }")
    actions.set_priority(rows[1], 2, by=people.manager)
    page.locator("#rows .priority-2").wait_for()  # at the top and idle: the list just updates
    assert page.locator("#list-banner").is_hidden()
