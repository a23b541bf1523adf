"""A manager sets up a mailbox in the browser: a preset fills the form, Test connection shows each step as it runs."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.browser.conftest import screenshot, session_cookie
from tests.servers.smtp import STARTTLS
from tests.servers.worker import ROOT
from tests.setup.conftest import SMTP_PASSWORD, SMTP_USER, DeliveringSMTPServer

pytestmark = pytest.mark.django_db(transaction=True)
README_SCREENSHOT = ROOT / "docs" / "screenshots" / "inbox-test-connection.png"


@pytest.fixture
def relay(smtp_certificates, mail_account):
    server = DeliveringSMTPServer(account=mail_account, security=STARTTLS, certificates=smtp_certificates,
                                  username=SMTP_USER, password=SMTP_PASSWORD).start()
    yield server
    server.stop()


def test_a_preset_fills_the_form_and_test_connection_passes_step_by_step(new_page, live_console, people, dovecot,
                                                                         mail_account, relay):
    page = new_page()
    page.context.add_cookies([session_cookie(people.manager)])
    page.goto("/admin/inboxes/inbox/add/")

    page.select_option("#id_preset", "google")
    assert page.input_value("#id_imap_host") == "imap.gmail.com"
    assert page.input_value("#id_imap_port") == "993"
    assert page.input_value("#id_smtp_host") == "smtp.gmail.com"
    assert page.input_value("#id_smtp_port") == "587"
    assert page.input_value("#id_smtp_security") == "starttls"
    assert "app password" in page.inner_text("#sb-preset-hint")
    assert page.is_hidden("#id_smtp_secret")  # "same as incoming" is on
    screenshot(page, "inbox-preset-google")

    page.select_option("#id_preset", "custom")
    page.fill("#id_address", mail_account.username)
    page.fill("#id_display_name", "Support")
    page.select_option("#id_department", str(people.department_a.pk))
    page.fill("#id_imap_host", dovecot.host)
    page.fill("#id_imap_port", str(dovecot.ports["ssl"]))
    page.select_option("#id_imap_security", "ssl")
    page.fill("#id_imap_username", mail_account.username)
    page.fill("#id_imap_secret", mail_account.password)
    page.fill("#id_smtp_host", relay.host)
    page.fill("#id_smtp_port", str(relay.port))
    page.uncheck("#id_smtp_same_as_incoming")
    page.fill("#id_smtp_username", SMTP_USER)
    page.fill("#id_smtp_secret", SMTP_PASSWORD)

    # When each step shows up: streamed, they come one by one; buffered, all in one moment.
    page.evaluate("""() => {
      window.stepTimes = [];
      new MutationObserver(records => records.forEach(record => record.addedNodes.forEach(node => {
        if (node.dataset && node.dataset.step) window.stepTimes.push(performance.now());
      }))).observe(document.getElementById("sb-steps"), {childList: true});
    }""")
    page.click("#sb-test-button")
    page.wait_for_selector("#sb-test-summary:has-text('Every step passed.')", timeout=60_000)
    times = page.evaluate("window.stepTimes")
    names = page.eval_on_selector_all("li.sb-step--ok", "items => items.map(item => item.dataset.step)")
    assert names[0] == "IMAP: DNS"
    assert names[-1] == "SMTP: login"
    assert len(names) == 17
    assert len(times) == 17
    assert times[-1] - times[0] > 20  # milliseconds: the TLS handshakes and logins ran in between
    assert page.locator("li.sb-step--failed").count() == 0
    assert "0 messages, 0 unread" in page.inner_text('li[data-step="IMAP: messages"]')
    assert mail_account.password not in page.content()
    page.locator("#sb-test").scroll_into_view_if_needed()
    shot = screenshot(page, "inbox-test-connection")
    if os.environ.get("UPDATE_README_SCREENSHOTS"):  # a deliberate refresh, not every run's tree
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)
    assert page.errors == []
