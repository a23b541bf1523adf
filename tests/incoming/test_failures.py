"""What a manager sees when a server refuses, and that passing trouble never disables an inbox."""

from __future__ import annotations

from django.utils import timezone

from conversations.incoming.polling import list_due_inboxes, poll_inbox
from conversations.models import Message
from core.locks import RedisLock
from inboxes.models import AuthMethod, ConnectionStatus, Security
from tests.incoming.conftest import threads, wait_for
from tests.servers.dovecot import free_port


def test_starttls_required_but_not_offered_fails_without_a_plaintext_login(db, make_inbox, mail_account, dovecot):
    inbox = make_inbox(Security.STARTTLS, imap_port=dovecot.ports["none"])
    mail_account.append(threads(1, replies=0))
    log_before = len(dovecot.log("plain"))

    result = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert "does not offer STARTTLS" in result.error
    assert inbox.connection_status == ConnectionStatus.ERROR
    assert "never sends a password unencrypted" in inbox.last_error
    assert Message.objects.filter(inbox=inbox).count() == 0
    # Dovecot logs a connection when it closes, a moment later: wait for our line.
    during_poll = wait_for(lambda: dovecot.log("plain")[log_before:], lambda text: "no auth attempts" in text)
    assert "Login:" not in during_poll
    assert "auth failed" not in during_poll


def test_a_wrong_password_shows_and_recovers_once_fixed(db, make_inbox, mail_account, security):
    inbox = make_inbox(security, imap_secret="not the password")
    mail_account.append(threads(2, replies=0))

    failed = poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    assert inbox.connection_status == ConnectionStatus.ERROR
    assert "refused the login" in inbox.last_error
    assert "Check the username and password" in failed.error
    assert inbox.active

    inbox.imap_secret = mail_account.password
    inbox.save()
    recovered = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert (recovered.created, recovered.error) == (2, "")
    assert (inbox.connection_status, inbox.last_error, inbox.consecutive_failures) == (
        ConnectionStatus.CONNECTED, "", 0)


def test_a_network_error_backs_off_and_keeps_the_inbox_active(db, make_inbox, mail_account, dovecot):
    inbox = make_inbox(Security.IMPLICIT_TLS, imap_port=free_port(), poll_interval=60)
    inbox.mark_connected()

    first = poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    first_delay = (inbox.next_poll_at - timezone.now()).total_seconds()
    assert "connection" in first.error
    assert inbox.active
    assert inbox.connection_status == ConnectionStatus.CONNECTED
    assert inbox.consecutive_failures == 1
    assert 59 <= first_delay <= 76  # never sooner than the poll interval; jitter adds up to a quarter
    assert inbox.pk not in list_due_inboxes()

    poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    assert inbox.consecutive_failures == 2
    assert (inbox.next_poll_at - timezone.now()).total_seconds() > first_delay

    inbox.imap_port = dovecot.ports["ssl"]
    inbox.save()
    mail_account.append(threads(1, replies=0))
    assert poll_inbox(inbox.pk).created == 1
    inbox.refresh_from_db()
    assert (inbox.consecutive_failures, inbox.next_poll_at, inbox.last_error) == (0, None, "")


def test_an_untrusted_certificate_is_refused_unless_verification_is_off(db, make_inbox, mail_account, settings):
    settings.MAIL_CA_FILE = ""  # the system store does not know the test CA
    inbox = make_inbox(Security.IMPLICIT_TLS)
    mail_account.append(threads(1, replies=0))

    poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    assert inbox.connection_status == ConnectionStatus.ERROR
    assert "certificate could not be verified" in inbox.last_error

    inbox.imap_verify_cert = False
    inbox.save()
    assert poll_inbox(inbox.pk).created == 1


def test_a_missing_folder_and_oauth_say_what_to_do(db, make_inbox, mail_account):
    missing = make_inbox(Security.NONE, imap_folder="No Such Folder")
    oauth = make_inbox(Security.NONE, auth_method=AuthMethod.MICROSOFT, address="oauth@switchboard.test")

    poll_inbox(missing.pk)
    poll_inbox(oauth.pk)

    missing.refresh_from_db()
    oauth.refresh_from_db()
    assert missing.connection_status == oauth.connection_status == ConnectionStatus.ERROR
    assert "“No Such Folder” could not be opened" in missing.last_error
    assert "not supported yet" in oauth.last_error


def test_a_poll_already_running_elsewhere_is_skipped(db, make_inbox, mail_account):
    inbox = make_inbox(Security.NONE)
    mail_account.append(threads(1, replies=0))

    with RedisLock(f"poll-inbox:{inbox.pk}", 60):
        skipped = poll_inbox(inbox.pk)
    done = poll_inbox(inbox.pk)

    assert skipped.skipped
    assert (skipped.fetched, done.created) == (0, 1)


def test_due_inboxes_are_those_whose_interval_elapsed(db, make_inbox, mail_account):
    inbox = make_inbox(Security.NONE, poll_interval=300)
    assert inbox.pk in list_due_inboxes()

    poll_inbox(inbox.pk)
    assert inbox.pk not in list_due_inboxes()
    assert inbox.pk in list_due_inboxes(timezone.now() + timezone.timedelta(seconds=301))


def test_an_inbox_whose_interval_ends_before_beats_next_look_is_polled_now(db, make_inbox, settings):
    settings.POLL_TICK_SECONDS = 10
    now = timezone.now()
    early = make_inbox(Security.NONE, poll_interval=60, last_poll_at=now - timezone.timedelta(seconds=49))
    almost = make_inbox(Security.NONE, poll_interval=60, last_poll_at=now - timezone.timedelta(seconds=51))

    due = list_due_inboxes(now)

    assert early.pk not in due  # beat looks again in 10 s, before its minute is up
    assert almost.pk in due  # at the next look it would be 1 s late
