"""A manager who fixes an inbox's connection settings does not wait out the old backoff."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations.incoming.polling import list_due_inboxes, poll_inbox
from inboxes.models import ConnectionStatus, Inbox, Security
from tests.incoming.conftest import threads


class _FormFields(HTMLParser):
    """What a browser would submit from the admin's change form, as it is rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, object] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "checkbox", "file"):
            self.data[name] = attrs.get("value") or ""
        elif tag == "input" and name and attrs.get("type") == "checkbox" and "checked" in attrs:
            self.data[name] = attrs.get("value") or "on"
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea] += data.removeprefix("\n") if not self.data[self._textarea] else data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def save_in_admin(client, inbox: Inbox, **changes: str) -> None:
    url = reverse("admin:inboxes_inbox_change", args=[inbox.pk])
    form = _FormFields()
    form.feed(client.get(url).content.decode())
    form.data.pop("csrfmiddlewaretoken", None)
    response = client.post(url, {**form.data, **changes})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


def backed_off(inbox: Inbox) -> Inbox:
    """The inbox as after many failed polls: an hour until the next one."""
    Inbox.objects.filter(pk=inbox.pk).update(
        consecutive_failures=7, next_poll_at=timezone.now() + dt.timedelta(hours=1),
        connection_status=ConnectionStatus.ERROR, last_error="Could not log in: the server refused the login")
    return Inbox.objects.get(pk=inbox.pk)


@pytest.mark.django_db
def test_saving_a_fixed_password_in_the_admin_resets_the_backoff_and_polls_soon(
        client, people, make_inbox, mail_account):
    inbox = backed_off(make_inbox(Security.NONE, imap_secret="not the password"))
    mail_account.append(threads(1, replies=0))
    assert inbox.pk not in list_due_inboxes()
    client.force_login(people.manager)

    save_in_admin(client, inbox, imap_secret=mail_account.password)

    inbox.refresh_from_db()
    assert inbox.consecutive_failures == 0
    assert inbox.next_poll_at <= timezone.now()
    assert inbox.pk in list_due_inboxes()
    assert poll_inbox(inbox.pk).created == 1
    inbox.refresh_from_db()
    assert (inbox.connection_status, inbox.last_error, inbox.next_poll_at) == (ConnectionStatus.CONNECTED, "", None)


@pytest.mark.django_db
def test_saving_other_settings_keeps_the_backoff(client, people, make_inbox):
    inbox = backed_off(make_inbox(Security.NONE))
    client.force_login(people.manager)

    save_in_admin(client, inbox, display_name="Renamed", imap_secret="")  # blank: the password is kept

    inbox.refresh_from_db()
    assert inbox.display_name == "Renamed"
    assert inbox.consecutive_failures == 7
    assert inbox.pk not in list_due_inboxes()


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value"), [
    ("imap_host", "imap.elsewhere.test"), ("imap_port", 10993), ("imap_security", Security.STARTTLS),
    ("imap_username", "someone-else"), ("imap_secret", "new secret"), ("imap_folder", "Support"),
])
def test_each_connection_setting_saved_on_the_model_resets_the_backoff(make_inbox, field, value):
    inbox = backed_off(make_inbox(Security.NONE))

    setattr(inbox, field, value)
    inbox.save(update_fields=[field])

    inbox.refresh_from_db()
    assert (inbox.consecutive_failures, inbox.pk in list_due_inboxes()) == (0, True)
