"""Secrets are encrypted at rest, never shown back in a form, and rotatable."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from config.encryption import reset_keys_cache
from inboxes.admin import InboxForm
from inboxes.models import Inbox
from tests.factories import InboxFactory

PASSWORD = "hunter2-Correct-Horse-Battery"


def _all_text_in_database() -> str:
    """Every text value in every table, as one string: a plaintext secret anywhere shows up here."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                chunks.extend(str(value) for value in row if value is not None)
    return "\n".join(chunks)


@pytest.mark.django_db
def test_database_holds_no_plaintext_secret_after_an_inbox_is_saved():
    inbox = InboxFactory(imap_secret=PASSWORD, smtp_secret=PASSWORD + "-smtp", oauth_client_secret="cs-" + PASSWORD)

    dump = _all_text_in_database()
    assert PASSWORD not in dump
    assert "hunter2" not in dump
    with connection.cursor() as cursor:
        cursor.execute("SELECT imap_secret FROM inboxes_inbox WHERE id = %s", [inbox.pk])
        assert cursor.fetchone()[0].startswith("fernet:")
    # ...and the application still reads it back.
    inbox.refresh_from_db()
    assert inbox.imap_secret == PASSWORD
    assert inbox.smtp_secret == PASSWORD + "-smtp"


@pytest.mark.django_db
def test_a_secret_is_never_rendered_into_the_admin_form():
    inbox = InboxFactory(imap_secret=PASSWORD)
    html = InboxForm(instance=inbox).as_div()
    assert PASSWORD not in html
    assert "A value is stored" in html


@pytest.mark.django_db
def test_blank_secret_in_the_form_keeps_the_stored_one_and_a_new_one_replaces_it():
    inbox = InboxFactory(imap_secret=PASSWORD)
    data = {k: v for k, v in InboxForm(instance=inbox).initial.items() if v is not None}
    data.update({"department": inbox.department_id, "imap_secret": "", "smtp_secret": ""})
    form = InboxForm(data=data, instance=inbox)
    assert form.is_valid(), form.errors
    form.save()
    inbox.refresh_from_db()
    assert inbox.imap_secret == PASSWORD

    data["imap_secret"] = "a-new-password"
    form = InboxForm(data=data, instance=inbox)
    assert form.is_valid(), form.errors
    form.save()
    inbox.refresh_from_db()
    assert inbox.imap_secret == "a-new-password"


def test_repr_of_a_secret_does_not_reveal_it():
    from config.encryption import Secret

    assert PASSWORD not in repr(Secret(PASSWORD))
    assert PASSWORD not in repr({"password": Secret(PASSWORD)})


@pytest.mark.django_db
def test_keys_rotate_old_ciphertext_stays_readable_until_rewritten(settings):
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    inbox = InboxFactory(imap_secret=PASSWORD)
    new_key = Fernet.generate_key().decode()
    try:
        settings.FIELD_ENCRYPTION_KEYS = [new_key, *old_keys]
        reset_keys_cache()
        inbox.refresh_from_db()
        assert inbox.imap_secret == PASSWORD
        from django.core.management import call_command

        call_command("rotate_secrets")
        settings.FIELD_ENCRYPTION_KEYS = [new_key]
        reset_keys_cache()
        inbox.refresh_from_db()
        assert inbox.imap_secret == PASSWORD
    finally:
        settings.FIELD_ENCRYPTION_KEYS = old_keys
        reset_keys_cache()


@pytest.mark.django_db
def test_without_the_key_a_stored_secret_is_refused_clearly(settings):
    from django.core.exceptions import ImproperlyConfigured

    inbox = InboxFactory(imap_secret=PASSWORD)
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    try:
        settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        reset_keys_cache()
        with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
            Inbox.objects.get(pk=inbox.pk)
    finally:
        settings.FIELD_ENCRYPTION_KEYS = old_keys
        reset_keys_cache()


@pytest.mark.django_db
def test_the_server_refuses_to_start_without_the_key_that_wrote_the_secrets(settings):
    from django.core.management import CommandError, call_command

    InboxFactory(imap_secret=PASSWORD)
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    try:
        settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        reset_keys_cache()
        with pytest.raises(CommandError, match=r"cannot be decrypted.*inboxes\.Inbox\.imap_secret"):
            call_command("runswitchboard")
    finally:
        settings.FIELD_ENCRYPTION_KEYS = old_keys
        reset_keys_cache()


def test_a_malformed_key_fails_the_system_check(settings):
    from config.checks import check_encryption_keys

    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    try:
        settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
        reset_keys_cache()
        errors = check_encryption_keys(None)
        assert [e.id for e in errors] == ["switchboard.E001"]
        assert "Fernet keys" in errors[0].msg
    finally:
        settings.FIELD_ENCRYPTION_KEYS = old_keys
        reset_keys_cache()


def test_an_sqlite_too_old_for_returning_is_refused_with_a_way_out():
    from config.checks import sqlite_version_errors

    assert sqlite_version_errors("sqlite", (3, 40, 1)) == []
    assert sqlite_version_errors("django.db.backends.postgresql", (3, 7, 0)) == []
    errors = sqlite_version_errors("sqlite", (3, 31, 1))
    assert [e.id for e in errors] == ["switchboard.E003"]
    assert "3.31.1" in errors[0].msg
    assert "DATABASE_URL" in errors[0].hint
