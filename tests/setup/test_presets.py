"""Provider presets and the words a refused login gets, per provider (pure: no servers)."""

from __future__ import annotations

import pytest

from inboxes.connection_test.imap_test import _login_refused
from inboxes.models import Inbox
from inboxes.presets import PRESETS, preset_for_host


@pytest.mark.parametrize(("key", "imap", "smtp"), [
    ("microsoft", ("outlook.office365.com", 993, "ssl"), ("smtp.office365.com", 587, "starttls")),
    ("google", ("imap.gmail.com", 993, "ssl"), ("smtp.gmail.com", 587, "starttls")),
    ("yahoo", ("imap.mail.yahoo.com", 993, "ssl"), ("smtp.mail.yahoo.com", 465, "ssl")),
    ("zoho", ("imap.zoho.com", 993, "ssl"), ("smtp.zoho.com", 587, "starttls")),
    ("fastmail", ("imap.fastmail.com", 993, "ssl"), ("smtp.fastmail.com", 587, "starttls")),
])
def test_each_preset_has_the_providers_servers(key, imap, smtp):
    preset = next(preset for preset in PRESETS if preset.key == key)
    assert (preset.imap_host, preset.imap_port, preset.imap_security) == imap
    assert (preset.smtp_host, preset.smtp_port, preset.smtp_security) == smtp
    assert "app password" in preset.password_hint.lower() or "application-specific" in preset.password_hint


def test_custom_comes_last_and_unknown_hosts_are_custom():
    assert PRESETS[-1].key == "custom"
    assert preset_for_host("mail.example.test").key == "custom"
    assert preset_for_host("IMAP.Gmail.com.").key == "google"


@pytest.mark.parametrize(("host", "words", "expect"), [
    ("imap.gmail.com", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)", "myaccount.google.com"),
    ("imap.gmail.com", "[ALERT] Your account is not enabled for IMAP use.", "Forwarding and POP/IMAP"),
    ("outlook.office365.com", "AUTHENTICATE failed.", "app password"),
    ("imap.mail.yahoo.com", "[AUTHENTICATIONFAILED] LOGIN Invalid credentials", "Generate app password"),
    ("mail.example.test", "[AUTHENTICATIONFAILED] Authentication failed.", "app password"),
])
def test_a_refused_login_says_what_to_do_for_the_provider(host, words, expect):
    failure = _login_refused(Inbox(imap_host=host, imap_username="help@example.test"), words)
    assert expect in failure.advice
    assert words in failure.detail
