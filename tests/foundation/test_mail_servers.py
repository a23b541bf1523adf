"""The IMAP fixture is a real Dovecot, and our transport logs in to it over each security mode."""

from __future__ import annotations

import pytest

from inboxes.imap import check_connection
from inboxes.models import Security
from tests import factories


@pytest.mark.parametrize("security", [Security.IMPLICIT_TLS, Security.STARTTLS, Security.NONE])
def test_the_transport_logs_in_to_dovecot_over_each_security_mode(db, dovecot, mail_account, settings, security):
    settings.MAIL_CA_FILE = str(dovecot.ca_file)
    mail_account.append([b"Subject: hello\r\nMessage-ID: <hello@example.com>\r\n\r\nHi\r\n"])
    inbox = factories.InboxFactory(
        imap_host=dovecot.host, imap_port=dovecot.ports[security], imap_security=security,
        imap_username=mail_account.username, imap_secret=mail_account.password,
    )

    folder = check_connection(inbox)

    assert folder.exists == 1
    assert folder.uidvalidity > 0
    login = f"Login: user=<{mail_account.username}>"
    log = dovecot.log("plain" if security == Security.NONE else "main")
    line = next(line for line in reversed(log.splitlines()) if login in line)
    assert (", TLS," in line) == (security != Security.NONE)
