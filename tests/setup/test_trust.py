"""Trusting a server's own certificate for one inbox, with verification on; a changed one fails loudly."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from conversations.incoming.polling import poll_inbox
from inboxes import smtp
from inboxes.connection_test import run_connection_test
from inboxes.connection_test.steps import StepFailed
from inboxes.connection_test.trust import trust_certificate
from inboxes.models import ConnectionStatus, Security


@pytest.fixture
def unknown_cas(settings):
    """Only the system store: the test servers' CAs are unknown, as a company's own CA would be."""
    settings.MAIL_CA_FILE = settings.SMTP_CA_FILE = ""


def _failed(result: dict) -> dict:
    return next(step for step in result["steps"] if not step["ok"])


def test_trusting_the_shown_certificate_makes_the_poll_and_the_send_succeed(setup_inbox, unknown_cas, people,
                                                                            relay):
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    trust_certificate(setup_inbox, "imap", failed["data"]["certificate"]["fingerprint"], people.manager)

    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "SMTP: TLS and certificate"
    trust_certificate(setup_inbox, "smtp", failed["data"]["certificate"]["fingerprint"], people.manager)

    setup_inbox.refresh_from_db()
    assert setup_inbox.imap_verify_cert  # verification stayed on
    assert setup_inbox.smtp_verify_cert
    assert run_connection_test(setup_inbox)["ok"]
    poll_inbox(setup_inbox.pk)
    setup_inbox.refresh_from_db()
    assert setup_inbox.connection_status == ConnectionStatus.CONNECTED, setup_inbox.last_error
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = setup_inbox.address, "ann@example.test", "Re: help"
    reply.set_content("Sent with verification on.")
    smtp.send(setup_inbox, reply, envelope_from=setup_inbox.address, recipients=["ann@example.test"])
    assert relay.received[-1].rcpt_tos == ["ann@example.test"]
    assert relay.received[-1].tls
    assert [change.action for change in setup_inbox.changes.all()] == [
        "trusted the SMTP certificate", "trusted the IMAP certificate"]
    assert setup_inbox.changes.first().user == people.manager


def test_a_different_certificate_afterwards_fails_saying_it_changed(setup_inbox, unknown_cas, impostor):
    failed = _failed(run_connection_test(setup_inbox))
    trust_certificate(setup_inbox, "imap", failed["data"]["certificate"]["fingerprint"])
    setup_inbox.refresh_from_db()
    setup_inbox.imap_port = impostor.port
    setup_inbox.save()

    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    assert "changed since it was trusted" in failed["detail"]
    assert failed["data"]["certificate"]["subject"] == "CN=localhost"
    poll_inbox(setup_inbox.pk)
    setup_inbox.refresh_from_db()
    assert setup_inbox.connection_status == ConnectionStatus.ERROR
    assert "certificate changed since it was trusted" in setup_inbox.last_error


def test_a_changed_smtp_certificate_stops_the_send_saying_so(setup_inbox, unknown_cas, impostor):
    failed = next(step for step in run_connection_test(setup_inbox)["steps"] if step["name"].startswith("SMTP: TLS"))
    trust_certificate(setup_inbox, "smtp", failed["data"]["certificate"]["fingerprint"])
    setup_inbox.refresh_from_db()
    setup_inbox.smtp_security, setup_inbox.smtp_port = Security.IMPLICIT_TLS, impostor.port
    with pytest.raises(smtp.TLSError, match="certificate changed since it was trusted"):
        smtp.send(setup_inbox, None, envelope_from=setup_inbox.address, recipients=["ann@example.test"], data=b"x")


def test_a_certificate_other_than_the_one_shown_is_not_trusted(setup_inbox, unknown_cas):
    with pytest.raises(StepFailed, match="different certificate"):
        trust_certificate(setup_inbox, "imap", "AA:" * 31 + "AA")
    setup_inbox.refresh_from_db()
    assert setup_inbox.imap_trusted_certificate == ""


def test_starttls_certificates_are_fetched_after_starttls(setup_inbox, unknown_cas, dovecot):
    setup_inbox.imap_security, setup_inbox.imap_port = Security.STARTTLS, dovecot.ports["starttls"]
    setup_inbox.save()
    failed = _failed(run_connection_test(setup_inbox))
    trust_certificate(setup_inbox, "imap", failed["data"]["certificate"]["fingerprint"])
    setup_inbox.refresh_from_db()
    assert next(step for step in run_connection_test(setup_inbox)["steps"] if step["name"].startswith("IMAP: TLS"))[
        "ok"]
