"""Start-up checks: refuse to run with encryption keys that cannot read the stored secrets."""

from __future__ import annotations

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from config.encryption import EncryptedTextField, _fernet, decrypt


@checks.register(checks.Tags.security)
def check_encryption_keys(app_configs, **kwargs) -> list[checks.CheckMessage]:
    try:
        _fernet()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="switchboard.E001")]
    return []


# Ingest and delivery insert and claim rows with INSERT / UPDATE ... RETURNING.
SQLITE_MINIMUM = (3, 35)


@checks.register(checks.Tags.compatibility)
def check_sqlite_version(app_configs, **kwargs) -> list[checks.CheckMessage]:
    import sqlite3

    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    return sqlite_version_errors("sqlite" if engine.endswith("sqlite3") else engine, sqlite3.sqlite_version_info)


def sqlite_version_errors(vendor: str, version: tuple[int, ...]) -> list[checks.CheckMessage]:
    if vendor != "sqlite" or tuple(version[:2]) >= SQLITE_MINIMUM:
        return []
    found = ".".join(str(part) for part in version)
    return [checks.Error(
        f"SQLite {found} is too old: Switchboard needs {'.'.join(map(str, SQLITE_MINIMUM))} or newer "
        "(for UPDATE ... RETURNING).",
        hint="Use Debian 12 or newer, or set DATABASE_URL to a PostgreSQL database.",
        id="switchboard.E003")]


def unreadable_secrets() -> list[str]:
    """Name the model fields holding a secret the current keys cannot decrypt (one sample each)."""
    problems = []
    for model in apps.get_models():
        for field in model._meta.fields:
            if not isinstance(field, EncryptedTextField):
                continue
            try:
                # Read the text as stored: going through the ORM would decrypt (and raise) on load.
                sample = _first_raw_value(model, field)
            except DatabaseError:
                return []  # not migrated yet: nothing stored to read
            if sample:
                try:
                    decrypt(sample)
                except (ImproperlyConfigured, ValueError):
                    problems.append(f"{model._meta.label}.{field.name}")
    return problems


def _first_raw_value(model, field) -> str | None:
    from django.db import connection

    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote(field.column)} FROM {quote(model._meta.db_table)} "  # noqa: S608 - names from the model
            f"WHERE {quote(field.column)} IS NOT NULL AND {quote(field.column)} <> '' LIMIT 1"
        )
        row = cursor.fetchone()
    return row[0] if row else None
