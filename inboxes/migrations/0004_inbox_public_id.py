import uuid

from django.db import migrations, models


def fill(apps, schema_editor):
    Inbox = apps.get_model("inboxes", "Inbox")
    for pk in Inbox.objects.values_list("pk", flat=True):
        Inbox.objects.filter(pk=pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    """Inboxes get a public id for the REST API; existing rows get a random one each."""

    dependencies = [("inboxes", "0003_trusted_certificates_policy_history")]

    operations = [
        migrations.AddField("inbox", "public_id", models.UUIDField(null=True, editable=False)),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField("inbox", "public_id",
                              models.UUIDField(default=uuid.uuid4, unique=True, editable=False)),
    ]
