"""The SMTP fixture is a real server: our transport secures the connection and logs in over each mode."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from inboxes import smtp
from tests import factories


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "support@switchboard.test"
    message["To"] = "customer@example.test"
    message["Subject"] = "Hello"
    message.set_content("Hello there.\n")
    return message


@pytest.mark.django_db
@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_it_logs_in_and_sends_over_each_security_mode(smtp_server_factory, security):
    server = smtp_server_factory(security=security, username="support", password="s3cret")
    inbox = factories.InboxFactory(**server.inbox_settings())

    assert smtp.check_login(inbox).startswith("250")
    result = smtp.send(inbox, _message(), envelope_from=inbox.address, recipients=["customer@example.test"])

    [received] = server.wait_for(1)
    assert result.reply.startswith("250 ")
    assert received.auth == "support"
    assert received.tls is (security != "none")
    assert received.rcpt_tos == ["customer@example.test"]


@pytest.mark.django_db
def test_a_wrong_password_is_refused(smtp_server_factory):
    server = smtp_server_factory(security="ssl", username="support", password="s3cret")
    inbox = factories.InboxFactory(**{**server.inbox_settings(), "smtp_secret": "wrong"})

    with pytest.raises(smtp.PermanentError, match="535"):
        smtp.check_login(inbox)
