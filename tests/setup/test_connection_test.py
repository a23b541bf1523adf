"""The connection test, step by step, against the real Dovecot and SMTP servers."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from inboxes.connection_test import run_connection_test
from inboxes.models import Security


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", subject
    message.set_content("hi")
    return bytes(message)


def _steps(result: dict) -> dict[str, dict]:
    return {step["name"]: step for step in result["steps"]}


def _failed(result: dict) -> dict:
    assert not result["ok"]
    return next(step for step in result["steps"] if not step["ok"])


def test_every_step_passes_with_the_counts_and_the_address(setup_inbox, mail_account):
    mail_account.append([_message("one"), _message("two"), _message("three")])
    mail_account.mark_read([1])

    result = run_connection_test(setup_inbox)

    assert result["ok"], [step for step in result["steps"] if not step["ok"]]
    steps = _steps(result)
    assert list(steps) == [
        "IMAP: DNS", "IMAP: connect", "IMAP: TLS and certificate", "IMAP: greeting and capabilities",
        "IMAP: login", "IMAP: folder", "IMAP: IDLE support", "IMAP: messages", "IMAP: address",
        "SMTP: DNS", "SMTP: connect", "SMTP: EHLO", "SMTP: STARTTLS offered", "SMTP: TLS and certificate",
        "SMTP: SIZE limit", "SMTP: sign-in mechanisms", "SMTP: login",
    ]
    assert steps["IMAP: messages"]["data"] == {"total": 3, "unread": 2}
    assert "3 messages, 2 unread" in steps["IMAP: messages"]["detail"]
    assert f"Signed in as {mail_account.username}" in steps["IMAP: address"]["detail"]
    assert steps["IMAP: IDLE support"]["data"]["idle"] is True
    assert "matches 127.0.0.1" in steps["IMAP: TLS and certificate"]["detail"]
    assert steps["IMAP: TLS and certificate"]["data"]["certificate"]["fingerprint"].count(":") == 31
    assert "PLAIN" in steps["SMTP: sign-in mechanisms"]["data"]["mechanisms"]
    assert all(step["seconds"] >= 0 for step in result["steps"])


def test_the_test_message_goes_round_and_arrives(setup_inbox, relay):
    result = run_connection_test(setup_inbox, send_test_message=True)

    assert result["ok"], [step for step in result["steps"] if not step["ok"]]
    last = result["steps"][-1]
    assert last["name"] == "Round trip: test message"
    assert "arrived" in last["detail"]
    assert relay.received[0].rcpt_tos == [setup_inbox.address]


def test_a_wrong_password_fails_at_login_with_the_app_password_hint(setup_inbox):
    setup_inbox.imap_secret = "wrong"
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: login"
    assert "refused the login" in failed["detail"]
    assert "app password" in failed["advice"]


def test_a_providers_own_hint_comes_with_a_refused_login(setup_inbox, relay):
    setup_inbox.smtp_secret = "wrong"
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "SMTP: login"
    assert "535" in failed["detail"]
    assert "wrong" not in failed["detail"] + failed["advice"]


def test_a_wrong_port_is_refused_at_connect(setup_inbox):
    from tests.servers.dovecot import free_port

    setup_inbox.imap_port = free_port()
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: connect"
    assert "refused the connection" in failed["detail"]
    assert "993" in failed["advice"]


def test_implicit_tls_against_the_plain_port_fails_the_handshake(setup_inbox, dovecot):
    setup_inbox.imap_port = dovecot.ports["starttls"]
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    assert "plain text" in failed["advice"]
    assert "STARTTLS" in failed["advice"]


def test_starttls_against_the_implicit_tls_port_says_it_expects_tls(setup_inbox, dovecot):
    setup_inbox.imap_security, setup_inbox.imap_port = Security.STARTTLS, dovecot.ports["ssl"]
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: greeting and capabilities"
    assert "sent no IMAP greeting" in failed["detail"]
    assert "implicit TLS" in failed["advice"]


def test_starttls_not_offered_fails_before_the_login(setup_inbox, dovecot):
    setup_inbox.imap_security, setup_inbox.imap_port = Security.STARTTLS, dovecot.ports["none"]
    result = run_connection_test(setup_inbox)
    failed = _failed(result)
    assert failed["name"] == "IMAP: STARTTLS offered"
    assert "does not offer STARTTLS" in failed["detail"]
    assert "IMAP: login" not in _steps(result)


def test_starttls_works_where_it_is_offered(setup_inbox, dovecot):
    setup_inbox.imap_security, setup_inbox.imap_port = Security.STARTTLS, dovecot.ports["starttls"]
    result = run_connection_test(setup_inbox)
    assert result["ok"], [step for step in result["steps"] if not step["ok"]]
    assert "IMAP: STARTTLS offered" in _steps(result)


@pytest.mark.parametrize("security", [Security.IMPLICIT_TLS, Security.STARTTLS])
def test_a_certificate_from_an_unknown_authority_is_shown_and_can_be_trusted(setup_inbox, dovecot, settings,
                                                                             security):
    settings.MAIL_CA_FILE = ""
    setup_inbox.imap_security = security
    setup_inbox.imap_port = dovecot.ports["ssl" if security == Security.IMPLICIT_TLS else "starttls"]
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    assert "not signed by an authority" in failed["detail"]
    assert failed["data"]["can_trust"] is True
    certificate = failed["data"]["certificate"]
    assert certificate["subject"] == "CN=localhost"
    assert "Switchboard IMAP" in certificate["issuer"] or "test CA" in certificate["issuer"]
    assert certificate["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "turn off" not in failed["advice"]


def test_a_missing_folder_lists_the_folders_to_pick_from(setup_inbox):
    setup_inbox.imap_folder = "Support"
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: folder"
    assert "“Support” does not exist" in failed["detail"]
    assert "INBOX" in failed["data"]["folders"]
    assert "INBOX" in failed["advice"]


def test_an_unknown_host_fails_at_dns(setup_inbox):
    setup_inbox.imap_host = "imap.does-not-exist.invalid"
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: DNS"
    assert "could not be found" in failed["detail"]


def test_smtp_starttls_not_offered_is_refused(setup_inbox, smtp_server_factory):
    plain = smtp_server_factory(security="starttls", offer_starttls=False)
    setup_inbox.smtp_port = plain.port
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "SMTP: STARTTLS offered"


def test_an_expired_certificate_says_so_and_who_must_renew_it(setup_inbox, impostor_factory, settings):
    server = impostor_factory(expired=True)
    settings.MAIL_CA_FILE = str(server.certificates.ca_file)
    setup_inbox.imap_port = server.port
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    assert "expired on" in failed["detail"]
    assert "renew" in failed["advice"]


def test_a_certificate_for_another_name_says_which_names_it_has(setup_inbox, impostor_factory, settings):
    server = impostor_factory(names=("mail.example.test",))
    settings.MAIL_CA_FILE = str(server.certificates.ca_file)
    setup_inbox.imap_port = server.port
    failed = _failed(run_connection_test(setup_inbox))
    assert failed["name"] == "IMAP: TLS and certificate"
    assert "is for mail.example.test, not for 127.0.0.1" in failed["detail"]
