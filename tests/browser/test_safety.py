"""Hostile mail cannot act in the agent's browser, markup in headers stays text, strangers see nothing."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from conversations import actions
from tests import factories
from tests.browser.conftest import screenshot, sign_in
from tests.servers.asgi import free_port

pytestmark = pytest.mark.django_db(transaction=True)
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


class Listener:
    """A loopback HTTP server that records every request it gets: the tracker pixel's host."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00"
                                 b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.server.shutdown()


def hostile_html(port: int) -> str:
    pixel = f"http://127.0.0.1:{port}"
    return (
        "<p>Dear agent, please click below.</p>"
        "<script>alert('script')</script>"
        "<img src=x onerror=\"alert('onerror')\">"
        "<a href=\"javascript:alert('js link')\">javascript link</a>"
        "<a href=\"data:text/html,<script>alert('data link')</script>\">data link</a>"
        f"<meta http-equiv=\"refresh\" content=\"0;url={pixel}/refresh\">"
        f"<form action=\"{pixel}/form\" method=post><input name=q><button>Go</button></form>"
        "<div style=\"position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999;background:red\">"
        "overlay</div>"
        "<svg><script>alert('svg')</script><circle r=10 onload=\"alert('svg onload')\"/></svg>"
        f"<img src=\"{pixel}/pixel.gif\" alt=\"tracker\">"
        f"<table background=\"{pixel}/background\"><tr><td>cell</td></tr></table>"
        f"<link rel=stylesheet href=\"{pixel}/style.css\">"
        "<p>Regards</p>"
    )


def test_hostile_html_does_nothing_until_images_are_asked_for(new_page, live_console, people, listener):
    contact = factories.ContactFactory(name="<img src=x onerror=alert('name')>", address="mallory@example.com")
    conversation = factories.ConversationFactory(inbox__department=people.department_a, contact=contact,
                                                 subject="<script>alert('subject')</script> Invoice",
                                                 assignee=people.agent_a)
    message = factories.MessageFactory(conversation=conversation, html=hostile_html(listener.port),
                                       text="Dear agent", from_name=contact.name, from_address=contact.address)
    factories.AttachmentFactory(message=message, filename="<b>invoice</b>.pdf", content_type="application/pdf")
    page = new_page()
    sign_in(page, "alice")
    page.goto(f"/c/{conversation.public_id}/")
    page.wait_for_selector("iframe.mail")
    page.wait_for_timeout(1500)  # time for anything that would fire to fire
    assert page.title() == "<script>alert('subject')</script> Invoice · Switchboard"
    assert page.locator("#subject").inner_text() == "<script>alert('subject')</script> Invoice"
    assert page.get_by_text("<b>invoice</b>.pdf").count() == 1
    assert page.get_by_text("<img src=x onerror=alert('name')>").first.is_visible()
    screenshot(page, "conversation-html")
    page.locator("#status-pending").click()  # the console's own buttons stay clickable over the mail
    page.locator("#status", has_text="Pending").wait_for()
    assert listener.requests == []
    assert page.errors == []
    assert page.dialogs == []

    page.get_by_role("button", name="Load images").click()
    page.wait_for_timeout(1500)
    assert listener.requests == ["/pixel.gif"]  # the image, and nothing else of the mail's
    assert page.errors == []
    assert page.dialogs == []


def test_a_stranger_gets_404_everywhere_and_nothing_on_the_socket(new_page, live_console, people):
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Secret of A")
    message = factories.MessageFactory(conversation=conversation, raw_size=30)
    message.raw.save("raw.eml", ContentFile(b"Subject: Secret of A\r\n\r\nsecret"))
    attachment = factories.AttachmentFactory(message=message)
    frames: list[str] = []
    agent_frames: list[str] = []

    stranger = new_page()
    stranger.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(str(data))))
    sign_in(stranger, "bob")
    agent = new_page()
    agent.on("websocket", lambda ws: ws.on("framereceived", lambda data: agent_frames.append(str(data))))
    sign_in(agent, "alice")
    for url in (f"/c/{conversation.public_id}/", f"/c/{conversation.public_id}/thread/",
                f"/api/attachments/{attachment.public_id}/", f"/api/messages/{message.public_id}/raw/",
                f"/m/{message.public_id}/frame/"):
        response = stranger.request.get(url)
        assert response.status == 404, url
    assert agent.request.get(f"/api/messages/{message.public_id}/raw/").status == 200

    actions.add_note(conversation, "Internal: refund approved", by=people.agent_a)
    actions.set_priority(conversation, 3, by=people.agent_a)
    agent.wait_for_timeout(2000)
    assert any(str(conversation.public_id) in frame for frame in agent_frames)  # the events did go out
    assert not any(str(conversation.public_id) in frame for frame in frames)
    assert "Secret of A" not in stranger.content()


def test_the_console_passes_axe_wcag_aa(new_page, live_console, people):
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Accessible?",
                                                 assignee=people.agent_a)
    factories.MessageFactory(conversation=conversation, text="Is this readable?", html="<p>Is this readable?</p>")
    page = new_page(bypass_csp=True)  # only so that the test can inject axe; the page's own scripts are files
    sign_in(page, "alice")
    page.goto(f"/c/{conversation.public_id}/")
    page.wait_for_selector("#pane")
    page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("""() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})""")
    violations = [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]} for v in result["violations"]]
    assert violations == [], json.dumps(violations, indent=1)
