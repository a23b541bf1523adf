"""What the inbox shows after a poll went wrong or the server did something worth knowing."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from conversations.incoming.polling import poll_inbox
from conversations.models import Conversation, Message
from inboxes.models import ConnectionStatus, Security
from tests.incoming.conftest import threads


def stored(inbox) -> int:
    return Message.objects.filter(inbox=inbox).count()


def test_a_changed_uidvalidity_is_shown_on_the_inbox_with_its_time(db, make_inbox, mail_account):
    inbox = make_inbox(Security.NONE)
    mail_account.append(threads(2, replies=0, prefix="Before"))
    poll_inbox(inbox.pk)
    inbox.refresh_from_db()
    old = inbox.uidvalidity
    assert (inbox.last_notice, inbox.uidvalidity_changed_at) == ("", None)

    mail_account.set_uidvalidity(old + 1000)
    before = timezone.now()
    poll_inbox(inbox.pk)
    poll_inbox(inbox.pk)  # a later, uneventful poll keeps the notice

    inbox.refresh_from_db()
    assert before <= inbox.uidvalidity_changed_at <= timezone.now()
    assert f"renumbered the folder “INBOX” (UIDVALIDITY {old} became {old + 1000})" in inbox.last_notice
    assert "mail already imported was not imported twice" in inbox.last_notice
    assert (inbox.connection_status, inbox.last_error) == (ConnectionStatus.CONNECTED, "")
    assert stored(inbox) == 2


# --- a database error in the middle of a poll ------------------------------------------------
def break_the_database_after(inbox, messages: int) -> tuple[threading.Thread, Callable[[], None]]:
    """Once `messages` are stored, make the poll's next database statement fail, for real.

    PostgreSQL: the poll's session is ended by pg_terminate_backend from another session, as an
    administrator or a failover would. SQLite has no sessions to kill: another connection holds
    the write lock longer than the poll's busy timeout ("database is locked"), then lets go.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            poll_pid = cursor.fetchone()[0]

        def strike() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [poll_pid])

        restore = lambda: None  # noqa: E731
    else:
        options = connection.settings_dict["OPTIONS"]
        busy_timeout, options["timeout"] = options.get("timeout"), 1
        connection.close()  # the poll's connection reopens with the short busy timeout

        def strike() -> None:
            locker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            time.sleep(1.5)  # the poll's write gives up after 1 s; its error record waits for this
            locker.execute("ROLLBACK")
            locker.close()

        def restore() -> None:
            options["timeout"] = busy_timeout

    def watch() -> None:
        try:
            while stored(inbox) < messages:
                time.sleep(0.005)
            strike()
        finally:
            connection.close()  # this thread's own connection

    return threading.Thread(target=watch, daemon=True), restore


@pytest.mark.django_db(transaction=True)
def test_a_database_error_mid_poll_is_the_inbox_last_error_and_loses_nothing(make_inbox, mail_account, settings):
    settings.POLL_BATCH_SIZE = 1  # a transaction per round trip: the poll is mid-way for a while
    inbox = make_inbox(Security.NONE)
    mail_account.append(threads(40, replies=1))  # 80 messages
    watcher, restore = break_the_database_after(inbox, 3)
    watcher.start()
    try:
        failed = poll_inbox(inbox.pk)
    finally:
        watcher.join()
        restore()

    inbox.refresh_from_db()
    at_failure = stored(inbox)
    assert 3 <= at_failure < 80, "the poll was not interrupted: nothing was tested"
    assert failed.error.startswith("The poll stopped because the database failed (OperationalError: ")
    assert inbox.last_error == failed.error
    assert "Nothing was lost" in inbox.last_error
    assert inbox.last_error_at is not None
    assert inbox.consecutive_failures == 1
    assert inbox.active
    assert inbox.last_uid <= at_failure

    again = poll_inbox(inbox.pk)

    inbox.refresh_from_db()
    assert (again.error, stored(inbox)) == ("", 80)
    duplicated = Message.objects.filter(inbox=inbox).values("header_message_id").annotate(n=Count("id"))
    assert [row for row in duplicated if row["n"] > 1] == []
    assert Conversation.objects.filter(inbox=inbox).count() == 40
    assert (inbox.last_uid, inbox.last_error, inbox.connection_status) == (80, "", ConnectionStatus.CONNECTED)
