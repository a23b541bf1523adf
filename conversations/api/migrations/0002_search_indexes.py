from django.db import migrations

INDEXES = {
    "conversations_conversation": ("api_search_subject", "to_tsvector('simple', subject)"),
    "conversations_contact": ("api_search_contact", "to_tsvector('simple', address || ' ' || name)"),
    "conversations_message": ("api_search_text", "to_tsvector('simple', left(text, 100000))"),
}


def create(apps, schema_editor):
    # Expression indexes that conversations.api.search matches word for word; SQLite searches
    # with a substring match and gets none.
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, (name, expression) in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expression}))")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _expression in INDEXES.values():
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("api", "0001_tokens_keys_uploads"), ("conversations", "0008_contact_and_canned_public_ids")]

    operations = [migrations.RunPython(create, drop)]
