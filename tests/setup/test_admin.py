"""Setting up a mailbox in the admin: the Custom preset against the real servers, Test connection, trust, status."""

from __future__ import annotations

import json
import logging

import pytest
from django.urls import reverse

from inboxes.models import ConnectionStatus, Inbox, Security
from inboxes.policy import OrganisationPolicy
from tests import factories
from tests.setup.conftest import SMTP_PASSWORD, SMTP_USER


def form_data(inbox_values: dict, department, **overrides) -> dict:
    """The inbox form as a manager fills it in from the Custom preset."""
    data = {
        "address": inbox_values["address"], "display_name": "Support", "department": department.pk, "active": "on",
        "preset": "custom", "auth_method": "password", "imap_host": inbox_values["imap_host"],
        "imap_port": inbox_values["imap_port"], "imap_security": "ssl", "imap_verify_cert": "on",
        "imap_username": inbox_values["imap_username"], "imap_secret": inbox_values["imap_secret"],
        "imap_folder": "INBOX", "poll_interval": 60, "after_import": "leave",
        "import_since_0": "2026-01-01", "import_since_1": "00:00:00", "outgoing_method": "smtp",
        "smtp_host": inbox_values["smtp_host"], "smtp_port": inbox_values["smtp_port"], "smtp_security": "starttls",
        "smtp_verify_cert": "on", "smtp_username": SMTP_USER, "smtp_secret": SMTP_PASSWORD, "sent_folder": "Sent",
        "use_agent_name": "on",
    }
    return {**data, **overrides}


def stream(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in b"".join(response).decode().splitlines()]


@pytest.fixture
def manager(client, people):
    client.force_login(people.manager)
    return people.manager


def test_a_manager_configures_an_inbox_from_custom_and_every_step_passes(client, manager, people, inbox_values,
                                                                         mail_account, caplog):
    caplog.set_level(logging.DEBUG)
    mail_account.append([b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"])
    data = form_data(inbox_values, people.department_a)
    # Tested before it is saved, from the add page.
    lines = stream(client.post(reverse("admin:inboxes_inbox_add_test_connection"), data))
    assert lines[-1] == {"done": True, "ok": True}, [line for line in lines if not line.get("ok")]

    response = client.post(reverse("admin:inboxes_inbox_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    inbox = Inbox.objects.get(address=inbox_values["address"])
    url = reverse("admin:inboxes_inbox_test_connection", args=[inbox.pk])
    steps = {line["name"]: line for line in stream(client.post(url, {**data, "imap_secret": "", "smtp_secret": ""}))
             if "name" in line}
    assert all(step["ok"] for step in steps.values())
    assert steps["IMAP: messages"]["data"] == {"total": 1, "unread": 1}
    assert steps["IMAP: address"]["data"]["address"] == inbox_values["address"]

    page = client.get(reverse("admin:inboxes_inbox_change", args=[inbox.pk])).content.decode()
    for secret in (inbox_values["imap_secret"], SMTP_PASSWORD):
        assert secret not in page
        assert secret not in caplog.text
        assert secret not in json.dumps(list(inbox.changes.values("action", "fields")))
    assert "Test connection" in page
    assert "Configured" in page
    assert "Change history" in page


def test_a_wrong_password_fails_at_login_on_the_page(client, manager, people, inbox_values):
    data = form_data(inbox_values, people.department_a, imap_secret="not-the-password")
    lines = stream(client.post(reverse("admin:inboxes_inbox_add_test_connection"), data))
    failed = [line for line in lines if line.get("ok") is False and "name" in line]
    assert [line["name"] for line in failed] == ["IMAP: login"]
    assert lines[-1] == {"done": True, "ok": False}
    assert "not-the-password" not in json.dumps(lines)


def test_a_blank_password_on_the_page_tests_the_stored_one(client, manager, people, setup_inbox, inbox_values):
    data = form_data(inbox_values, people.department_a, imap_secret="", smtp_secret="")
    lines = stream(client.post(reverse("admin:inboxes_inbox_test_connection", args=[setup_inbox.pk]), data))
    assert lines[-1]["ok"] is True


def test_broken_settings_are_reported_before_any_test(client, manager, people, inbox_values):
    data = form_data(inbox_values, people.department_a, imap_port="not a port")
    response = client.post(reverse("admin:inboxes_inbox_add_test_connection"), data)
    assert response.status_code == 400
    assert "imap_port" in response.json()["errors"]


def test_the_test_is_rate_limited_per_inbox(client, manager, people, setup_inbox, inbox_values, settings):
    settings.CONNECTION_TESTS_PER_MINUTE = 2
    url = reverse("admin:inboxes_inbox_test_connection", args=[setup_inbox.pk])
    data = form_data(inbox_values, people.department_a, imap_host="imap.does-not-exist.invalid")
    assert [client.post(url, data).status_code for _ in range(3)] == [200, 200, 429]
    assert "wait a minute" in client.post(url, data).json()["error"]


def test_trusting_a_certificate_from_the_page_keeps_verification_on(client, manager, people, setup_inbox,
                                                                    inbox_values, settings):
    settings.MAIL_CA_FILE = ""
    data = form_data(inbox_values, people.department_a, imap_secret="", smtp_secret="")
    lines = stream(client.post(reverse("admin:inboxes_inbox_test_connection", args=[setup_inbox.pk]), data))
    failed = next(line for line in lines if line.get("ok") is False)
    assert failed["name"] == "IMAP: TLS and certificate"
    fingerprint = failed["data"]["certificate"]["fingerprint"]

    trust_url = reverse("admin:inboxes_inbox_trust_certificate", args=[setup_inbox.pk])
    answer = client.post(trust_url, {**data, "side": "imap", "fingerprint": fingerprint}).json()
    assert answer["fingerprint"] == fingerprint
    lines = stream(client.post(reverse("admin:inboxes_inbox_test_connection", args=[setup_inbox.pk]), data))
    assert lines[-1]["ok"] is True
    setup_inbox.refresh_from_db()
    assert setup_inbox.imap_verify_cert is True
    page = client.get(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk])).content.decode()
    assert fingerprint in page
    assert "trusted the IMAP certificate" in page


def test_the_admin_action_tests_several_inboxes(client, manager, setup_inbox, inbox_values):
    broken = factories.InboxFactory(**{**inbox_values, "address": "other@switchboard.test", "imap_folder": "Gone"})
    response = client.post(reverse("admin:inboxes_inbox_changelist"), {
        "action": "test_connections", "_selected_action": [setup_inbox.pk, broken.pk]}, follow=True)
    text = " ".join(str(message) for message in response.context["messages"])
    assert f"{setup_inbox.address}: every step passed." in text
    assert "other@switchboard.test: IMAP: folder failed." in text


@pytest.mark.parametrize("who", ["agent", "stranger"])
def test_a_non_manager_cannot_reach_the_test_or_the_trust(client, people, setup_inbox, who):
    if who == "agent":
        client.force_login(people.agent_a.user)
    for name in ("admin:inboxes_inbox_test_connection", "admin:inboxes_inbox_trust_certificate"):
        response = client.post(reverse(name, args=[setup_inbox.pk]), {"side": "imap", "fingerprint": "AA"})
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
    assert client.post(reverse("admin:inboxes_inbox_add_test_connection"), {}).status_code == 302


def test_changes_are_recorded_by_name_and_never_with_values(client, manager, people, setup_inbox, inbox_values):
    data = form_data(inbox_values, people.department_a, imap_secret="brand-new-secret", smtp_secret="",
                     poll_interval=120)
    response = client.post(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    change = setup_inbox.changes.get()
    assert change.user == manager
    assert {"imap_secret", "poll_interval"} <= set(change.fields)
    assert "smtp_secret" not in change.fields  # left blank: the stored one is kept
    assert "brand-new-secret" not in client.get(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk])
                                                ).content.decode()


def test_smtp_sign_in_same_as_incoming_copies_the_imap_username_and_password(client, manager, people,
                                                                              inbox_values):
    data = form_data(inbox_values, people.department_a, smtp_same_as_incoming="on", smtp_username="",
                     smtp_secret="")
    assert client.post(reverse("admin:inboxes_inbox_add"), data).status_code == 302
    inbox = Inbox.objects.get(address=inbox_values["address"])
    assert (inbox.smtp_username, inbox.smtp_secret) == (inbox.imap_username, inbox.imap_secret)


def test_the_status_badge_shows_on_the_list(client, manager, setup_inbox):
    Inbox.objects.filter(pk=setup_inbox.pk).update(connection_status=ConnectionStatus.ERROR, last_error="Boom")
    page = client.get(reverse("admin:inboxes_inbox_changelist")).content.decode()
    assert 'sb-badge--error' in page
    page = client.get(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk])).content.decode()
    assert "Last error" in page
    assert "Boom" in page


def test_the_organisation_policy_applies_where_the_inbox_sets_none_and_shows_as_a_notice(client, manager,
                                                                                        setup_inbox):
    OrganisationPolicy.objects.create(allowed_recipient_domains="Example.com\n", max_sends_per_hour=30)
    assert setup_inbox.allowed_domains == ["example.com"]
    assert setup_inbox.sends_per_hour_cap == 30
    page = client.get(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk])).content.decode()
    assert "Replies may go only to example.com (organisation policy)." in page
    assert "At most 30 replies an hour (organisation policy)." in page
    setup_inbox.max_sends_per_hour = 5
    assert setup_inbox.sends_per_hour_cap == 5


def test_the_index_says_what_to_do_first_without_an_inbox(client, manager):
    page = client.get(reverse("admin:index")).content.decode()
    assert "Getting started" in page
    assert reverse("admin:inboxes_inbox_add") in page


def test_the_index_shows_inboxes_in_error_queues_and_agents_online(client, manager, people, setup_inbox):
    Inbox.objects.filter(pk=setup_inbox.pk).update(connection_status=ConnectionStatus.ERROR, last_error="Boom")
    factories.ConversationFactory(inbox=setup_inbox, department=people.department_a, assignee=None)
    people.agent_b.presence = "online"
    people.agent_b.save()
    page = client.get(reverse("admin:index")).content.decode()
    assert setup_inbox.address in page
    assert "Department A: 1" in page
    assert "Bob" in page


def test_the_health_links_lead_to_the_inboxs_failed_replies_and_quarantine(client, manager, setup_inbox):
    page = client.get(reverse("admin:inboxes_inbox_change", args=[setup_inbox.pk])).content.decode()
    for link in (f"?inbox={setup_inbox.pk}&amp;delivery_status__exact=failed",
                 f"?inbox__id__exact={setup_inbox.pk}&amp;status__exact=held"):
        assert link in page
        url = link.replace("&amp;", "&")
        base = "conversations_message" if "delivery" in url else "conversations_quarantinedmessage"
        assert client.get(reverse(f"admin:{base}_changelist") + url).status_code == 200


def test_starttls_choice_of_the_form_is_kept(client, manager, people, inbox_values, dovecot):
    data = form_data(inbox_values, people.department_a, imap_security=Security.STARTTLS,
                     imap_port=dovecot.ports["starttls"])
    lines = stream(client.post(reverse("admin:inboxes_inbox_add_test_connection"), data))
    assert "IMAP: STARTTLS offered" in [line.get("name") for line in lines]
