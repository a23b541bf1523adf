"""An agent answers an email in the browser: it arrives live, the reply leaves threaded, its state turns sent."""

from __future__ import annotations

import datetime as dt
import re
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest

from inboxes.models import Security
from tests import factories
from tests.browser.conftest import screenshot, server_password, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def customer_email(subject: str, body: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Customer Carla <carla@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(body)
    return message


def mailbox_inbox(department, dovecot, mail_account, smtp):
    return factories.InboxFactory(
        department=department, address=mail_account.username, imap_host=dovecot.host,
        imap_port=dovecot.ports[Security.IMPLICIT_TLS], imap_security=Security.IMPLICIT_TLS,
        imap_username=mail_account.username, imap_secret=mail_account.password,
        import_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), **smtp.inbox_settings())


def test_an_email_arrives_live_and_the_reply_leaves_threaded(new_page, live_console, dovecot, mail_account, people,
                                                             trust_test_ca):
    from config.celery import app

    inbox = mailbox_inbox(people.department_a, dovecot, mail_account, live_console.smtp)
    factories.CannedResponseFactory(title="Refund policy", department=people.department_a,
                                    body="Dear {{ contact.name }}, refunds take five days.")
    page = new_page()
    sign_in(page, "alice")
    page.get_by_role("link", name=re.compile("My departments")).click()
    page.wait_for_selector("#list .empty")
    screenshot(page, "list-empty")

    incoming = customer_email("Where is my refund?", "I returned the shoes two weeks ago.", inbox.address)
    mail_account.append([incoming.as_bytes()])
    app.send_task("conversations.poll_inbox", args=[inbox.pk])
    row = page.locator("#rows a.row", has_text="Where is my refund?")
    row.wait_for(timeout=30_000)  # no reload: the socket's event re-fetched the list
    assert page.url.endswith("/")
    screenshot(page, "list")

    row.click()
    page.wait_for_selector("#pane h1:has-text('Where is my refund?')")
    assert page.title() == "Where is my refund? · Switchboard"
    page.get_by_label("Canned responses").fill("refund")
    page.get_by_role("button", name="Refund policy").click()
    assert page.locator("#composer-text").input_value().startswith(
        "Dear Customer Carla, refunds take five days.")
    page.set_input_files("#composer-files", files=[
        {"name": "label.txt", "mimeType": "text/plain", "buffer": b"Return label 42"}])
    screenshot(page, "composer-canned")
    page.get_by_role("button", name="Send", exact=True).click()

    received = live_console.smtp.wait_for(1, timeout=30)[-1]
    sent = message_from_bytes(received.data, policy=policy.default)
    assert sent["In-Reply-To"] == incoming["Message-ID"]
    assert incoming["Message-ID"] in sent["References"]
    assert sent["Subject"] == "Re: Where is my refund?"
    assert "refunds take five days" in sent.get_body(("plain",)).get_content()
    assert [part.get_filename() for part in sent.iter_attachments()] == ["label.txt"]
    page.locator(".message.outgoing .delivery-sent").wait_for(timeout=20_000)  # turned sent without a reload
    assert page.errors == []
    assert page.dialogs == []


def test_a_draft_survives_a_reload(new_page, live_console, people):
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Draft me")
    factories.MessageFactory(conversation=conversation, text="Question")
    page = new_page()
    sign_in(page, "alice")
    page.goto(f"/c/{conversation.public_id}/")
    page.locator("#composer-text").fill("Half of my answer")
    page.wait_for_selector("#draft-state:has-text('Draft saved')")
    page.reload()
    assert page.locator("#composer-text").input_value() == "Half of my answer"
    other_tab = page.context.new_page()
    other_tab.goto(f"/c/{conversation.public_id}/")
    assert other_tab.locator("#composer-text").input_value() == "Half of my answer"


def test_a_file_attached_to_a_draft_survives_a_reload_and_leaves_with_the_reply(new_page, live_console, people,
                                                                              tmp_path):
    from conversations.models import Direction

    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Attach me")
    factories.MessageFactory(conversation=conversation, text="Can you send the invoice?")
    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"%PDF-1.4 the invoice")
    page = new_page()
    sign_in(page, "alice")
    page.goto(f"/c/{conversation.public_id}/")
    page.locator("#composer-text").fill("Here it is.")
    page.locator("#composer-files").set_input_files(str(invoice))
    page.locator(".draft-files", has_text="invoice.pdf").wait_for()

    page.reload()
    page.locator(".draft-files", has_text="invoice.pdf").wait_for()
    assert page.locator("#composer-text").input_value() == "Here it is."
    page.locator("#send-button").click()
    page.locator(".message.outgoing", has_text="Here it is.").wait_for()

    reply = conversation.messages.get(direction=Direction.OUT)
    assert [a.filename for a in reply.attachments.all()] == ["invoice.pdf"]
    assert page.locator(".draft-files").count() == 0
    assert page.errors == []


def test_a_customers_inline_styles_apply_in_the_mail_frame(new_page, live_console, people):
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Styled")
    factories.MessageFactory(conversation=conversation, text="Green",
                             html='<p style="color: rgb(0, 128, 0); font-weight: bold">Green</p>')
    page = new_page()
    sign_in(page, "alice")
    page.goto(f"/c/{conversation.public_id}/")
    styled = page.frame_locator("iframe.mail").locator("p", has_text="Green")
    styled.wait_for()

    assert styled.evaluate("p => getComputedStyle(p).color") == "rgb(0, 128, 0)"
    assert styled.evaluate("p => getComputedStyle(p).fontWeight") == "700"
    assert page.errors == []


def test_keyboard_only_sign_in_open_reply_close(new_page, live_console, people):
    conversation = factories.ConversationFactory(inbox__department=people.department_a, subject="Keys only",
                                                 assignee=people.agent_a)
    factories.MessageFactory(conversation=conversation, text="Can you do it without a mouse?")
    server_password("alice")
    page = new_page()
    page.goto("/login/")
    # The username field takes the focus by itself (autofocus), once the browser has drawn the page.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_username'")
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    page.wait_for_selector("#live-state.ok")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.subject") == "Keys only"
    page.keyboard.press("Enter")
    page.wait_for_selector("#pane h1:has-text('Keys only')")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "composer-text"
    page.keyboard.type("Yes, all by keyboard.")
    page.keyboard.press("Control+Enter")
    page.locator(".message.outgoing", has_text="Yes, all by keyboard.").wait_for()
    page.keyboard.press("e")
    page.locator("#status", has_text="Closed").wait_for()
    deadline = time.monotonic() + 5
    conversation.refresh_from_db()
    while conversation.status != "closed" and time.monotonic() < deadline:
        time.sleep(0.1)
        conversation.refresh_from_db()
    assert conversation.status == "closed"
    assert conversation.messages.filter(direction="out", text__contains="Yes, all by keyboard.").exists()
