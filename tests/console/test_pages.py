"""The console's pages and fragments, through Django's test client: what each person sees."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from conversations.console.models import Draft
from conversations.models import ConversationStatus, DeliveryStatus, Direction, Message, MessageKind
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(people):
    return factories.InboxFactory(department=people.department_a, address="support@a.test")


@pytest.fixture
def conversation(inbox):
    row = factories.ConversationFactory(inbox=inbox, subject="<b>Refund</b> please")
    factories.MessageFactory(conversation=row, text="Hello, see https://example.test/order?id=1&x=2 <b>now</b>")
    return row


def page(client, user, name, *args, **params):
    client.force_login(user)
    return client.get(reverse(f"console:{name}", args=args), params)


def test_it_lists_the_departments_conversations(client, people, conversation):
    response = page(client, people.agent_a.user, "index", view="departments")
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;b&gt;Refund&lt;/b&gt; please" in body
    assert "<b>Refund</b>" not in body


def test_it_shows_the_subject_as_text_in_the_title(client, people, conversation):
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "<title>&lt;b&gt;Refund&lt;/b&gt; please · Switchboard</title>" in body


def test_a_stranger_gets_404(client, people, conversation):
    message = conversation.messages.get()
    for name, arg in (("conversation", conversation.public_id), ("thread", conversation.public_id),
                      ("sidebar", conversation.public_id), ("canned", conversation.public_id),
                      ("frame", message.public_id), ("message_status", message.public_id)):
        assert page(client, people.agent_b.user, name, arg).status_code == 404, name
    client.force_login(people.agent_b.user)
    response = client.post(reverse("console:send", args=[conversation.public_id]), {"text": "hi"})
    assert response.status_code == 404
    assert not conversation.messages.filter(direction=Direction.OUT).exists()
    assert "Refund" not in page(client, people.agent_b.user, "index", view="departments").content.decode()


def test_the_manager_sees_all(client, people, conversation):
    body = page(client, people.manager, "index", view="all").content.decode()
    assert "Refund" in body
    assert page(client, people.manager, "conversation", conversation.public_id).status_code == 200


def test_plain_text_links_are_clickable_and_escaped(client, people, conversation):
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert ('<a href="https://example.test/order?id=1&amp;x=2" rel="noopener noreferrer nofollow" '
            'target="_blank">') in body
    assert "&lt;b&gt;now&lt;/b&gt;" in body


HOSTILE = (
    '<p>Hi</p><img src="http://127.0.0.1:9/pixel.gif" alt="tracker">'
    '<a href="https://example.test/ok">fine link</a>'
)


def test_html_mail_is_framed_without_remote_images_until_asked(client, people, conversation):
    message = factories.MessageFactory(conversation=conversation, html=HOSTILE, text="Hi")
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in body
    frame = html.unescape(body.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert "127.0.0.1:9" not in frame
    assert "default-src 'none'; img-src data:;" in frame
    assert "Load images" in body
    loaded = page(client, people.agent_a.user, "frame", message.public_id, images="1").content.decode()
    srcdoc = html.unescape(loaded.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert 'src="http://127.0.0.1:9/pixel.gif"' in srcdoc
    assert "img-src data: https: http:" in srcdoc
    assert '<meta name="referrer" content="no-referrer">' in srcdoc
    assert "Load images" not in loaded


def test_quoted_history_is_folded_not_dropped(client, people, conversation):
    factories.MessageFactory(conversation=conversation, text=(
        "Thanks!\n\nOn Mon, Jan 1, 2024 at 10:00 AM Bob <bob@x.test> wrote:\n> the old question\n"))
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert '<details class="quoted">' in body
    assert "&gt; the old question" in body


def test_display_name_warnings_show(client, people, conversation):
    factories.MessageFactory(conversation=conversation, from_name="boss@a.test", from_address="evil@x.test",
                             display_name_has_address=True, new_participant=True)
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "the real sender is evil@x.test" in body
    assert "New participant: evil@x.test" in body


def test_a_draft_is_kept_per_agent(client, people, conversation):
    client.force_login(people.agent_a.user)
    response = client.post(reverse("console:draft", args=[conversation.public_id]),
                           {"mode": "reply", "text": "Half written", "to": "customer@x.test"})
    assert response.status_code == 204
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "Half written</textarea>" in body
    colleague = factories.AgentFactory(user__username="carol", departments=[people.department_a])
    assert "Half written" not in page(client, colleague.user, "conversation", conversation.public_id).content.decode()


def send(client, conversation, **data):
    return client.post(reverse("console:send", args=[conversation.public_id]), data, HTTP_HX_REQUEST="true")


def test_a_reply_is_queued_and_the_draft_goes(client, people, conversation):
    client.force_login(people.agent_a.user)
    Draft.objects.create(user=people.agent_a.user, conversation=conversation, text="old")
    seen = conversation.messages.get().created_at.isoformat()
    response = send(client, conversation, mode="reply", text="We will refund you.", to=conversation.contact.address,
                    seen=seen, close="1")
    assert response.status_code == 200
    reply = conversation.messages.get(direction=Direction.OUT)
    assert reply.delivery_status == DeliveryStatus.QUEUED
    assert "We will refund you." in reply.text
    assert not Draft.objects.exists()
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.CLOSED


def test_files_attached_to_a_draft_stay_after_a_reload_and_leave_with_the_reply(
        client, people, conversation, settings, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from conversations.console.models import DraftFile

    settings.API_UPLOAD_MAX_BYTES = 1000
    client.force_login(people.agent_a.user)
    attach = reverse("console:draft_files", args=[conversation.public_id])
    response = client.post(attach, {"attachments": [
        SimpleUploadedFile("invoice.pdf", b"%PDF-1.4 invoice", content_type="application/pdf"),
        SimpleUploadedFile("photo.png", b"\x89PNG" + b"x" * 2000, content_type="image/png"),
        SimpleUploadedFile("notes.txt", b"remember", content_type="text/plain")]}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    fragment = response.content.decode()
    assert "invoice.pdf" in fragment
    assert "notes.txt" in fragment
    assert "photo.png is 2004 bytes; at most 1000 are allowed." in fragment

    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "invoice.pdf" in body
    assert "notes.txt" in body
    colleague = factories.AgentFactory(user__username="carol", departments=[people.department_a])
    assert "invoice.pdf" not in page(client, colleague.user, "conversation", conversation.public_id).content.decode()

    notes = DraftFile.objects.get(filename="notes.txt")
    client.force_login(colleague.user)
    assert client.post(reverse("console:remove_draft_file", args=[notes.public_id])).status_code == 404
    client.force_login(people.agent_a.user)
    removed = client.post(reverse("console:remove_draft_file", args=[notes.public_id]), HTTP_HX_REQUEST="true")
    assert "notes.txt" not in removed.content.decode()
    stored = DraftFile.objects.get(filename="invoice.pdf").file
    assert stored.storage.exists(stored.name)

    seen = conversation.messages.get().created_at.isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        send(client, conversation, mode="reply", text="Your invoice.", to=conversation.contact.address, seen=seen)
    reply = conversation.messages.get(direction=Direction.OUT)
    assert [(a.filename, a.content_type) for a in reply.attachments.all()] == [("invoice.pdf", "application/pdf")]
    assert not Draft.objects.exists()
    assert not DraftFile.objects.exists()
    assert not stored.storage.exists(stored.name)


def test_someone_elses_reply_since_opening_asks_first(client, people, conversation):
    seen = conversation.messages.get().created_at.isoformat()
    colleague = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    factories.MessageFactory(conversation=conversation, direction=Direction.OUT, kind=MessageKind.NOTE,
                             author=colleague, text="I am on it")
    client.force_login(people.agent_a.user)
    response = send(client, conversation, mode="reply", text="Me too", seen=seen)
    body = response.content.decode()
    assert "Since you opened this conversation" in body
    assert "I am on it" in body
    assert response["HX-Retarget"] == "#composer"
    assert not conversation.messages.filter(kind=MessageKind.EMAIL, direction=Direction.OUT).exists()
    send(client, conversation, mode="reply", text="Me too", seen=seen, confirm="1")
    assert conversation.messages.filter(kind=MessageKind.EMAIL, direction=Direction.OUT).count() == 1


def test_a_bad_address_is_named_and_nothing_is_queued(client, people, conversation):
    client.force_login(people.agent_a.user)
    body = send(client, conversation, mode="reply", text="Hi", cc="not an address").content.decode()
    assert "not an address" in body
    assert not Message.objects.filter(direction=Direction.OUT).exists()


def test_assign_to_me_loses_a_race_politely(client, people, conversation):
    client.force_login(people.agent_a.user)
    colleague = factories.AgentFactory(user__username="carol", name="Carol", departments=[people.department_a])
    conversation.assignee = colleague
    conversation.save()
    response = client.post(reverse("console:assign", args=[conversation.public_id]),
                           {"agent": "me", "expected": "none"})
    assert "just assigned to Carol" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.assignee == colleague


def test_canned_responses_are_filled_in(client, people, conversation):
    factories.CannedResponseFactory(title="Refund policy", body="Dear {{ contact.name }}, <b>refunds</b> take 5 days.",
                                    department=people.department_a)
    body = page(client, people.agent_a.user, "canned", conversation.public_id, canned_q="refund").content.decode()
    assert f"Dear {conversation.contact.name}, &lt;b&gt;refunds&lt;/b&gt; take 5 days." in body


def test_unread_until_opened(client, people, conversation):
    assert "row unread" in page(client, people.agent_a.user, "index", view="departments").content.decode()
    page(client, people.agent_a.user, "conversation", conversation.public_id)
    assert "row unread" not in page(client, people.agent_a.user, "index", view="departments").content.decode()


def outgoing(conversation, status, **fields):
    return factories.MessageFactory(conversation=conversation, direction=Direction.OUT, delivery_status=status,
                                    text="Our answer", **fields)


def test_every_delivery_state_shows_and_resend_where_it_applies(client, people, conversation):
    failed = outgoing(conversation, DeliveryStatus.FAILED, delivery_server_reply="550 5.1.1 <x@y>: no such user")
    uncertain = outgoing(conversation, DeliveryStatus.UNCERTAIN)
    sent = outgoing(conversation, DeliveryStatus.SENT)
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "550 5.1.1 &lt;x@y&gt;: no such user" in body
    assert "Uncertain: check before resending" in body
    assert body.count(">Resend</button>") == 2
    assert str(sent.public_id) in body
    response = client.post(reverse("console:resend", args=[uncertain.public_id]))
    uncertain.refresh_from_db()
    assert uncertain.delivery_status == DeliveryStatus.QUEUED
    assert "Queued" in response.content.decode()
    failed.refresh_from_db()
    assert failed.delivery_status == DeliveryStatus.FAILED


def test_automatic_mail_is_marked(client, people, conversation):
    factories.MessageFactory(conversation=conversation, is_automatic=True,
                             automatic_reason="Auto-Submitted: auto-replied")
    body = page(client, people.agent_a.user, "conversation", conversation.public_id).content.decode()
    assert "Automatic mail: Auto-Submitted: auto-replied" in body


def test_managers_get_the_admin_link_and_agents_do_not(client, people, conversation):
    assert 'href="/admin/"' in page(client, people.manager, "index").content.decode()
    assert 'href="/admin/"' not in page(client, people.agent_a.user, "index").content.decode()
    assert ">All <" not in page(client, people.agent_a.user, "index", view="all").content.decode()


class _Forms(HTMLParser):
    """The forms of a page as a browser without JavaScript sees them: method, action, fields, buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"method": attrs.get("method", "get"), "action": attrs.get("action", ""),
                               "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and attrs.get("type") == "hidden":
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value", "")
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(attrs.get("id"))


def _plain_form(people, conversation, button: str) -> tuple[Client, str, dict]:
    """Alice's browser with CSRF checks on, the conversation's address, and the form of `button`
    on its page, which must post."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.agent_a.user)
    url = reverse("console:conversation", args=[conversation.public_id])
    forms = _Forms()
    forms.feed(client.get(url).content.decode())
    form = next(form for form in forms.forms if button in form["buttons"])
    assert form["method"] == "post"
    return client, url, form


def test_with_javascript_off_the_sidebars_plain_forms_close_the_conversation(people, conversation):
    """A browser without JavaScript, or a key pressed before htmx took over a fragment it just
    swapped in, submits the form itself: that must do what the button says, CSRF and all."""
    client, url, close = _plain_form(people, conversation, "status-closed")

    response = client.post(close["action"], close["fields"])

    assert response.status_code == 302
    assert response["Location"] == url
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.CLOSED
    assert '<p id="status" class="status status-closed">Closed</p>' in client.get(url).content.decode()


def test_with_javascript_off_a_reply_is_sent_from_the_composer_form(people, conversation):
    client, url, composer = _plain_form(people, conversation, "send-button")

    response = client.post(composer["action"], {**composer["fields"], "mode": "reply", "text": "Sent without JS"})

    assert response.status_code == 302
    assert response["Location"] == url
    assert conversation.messages.filter(direction=Direction.OUT, text__startswith="Sent without JS").exists()
