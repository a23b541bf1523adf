import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def fill(apps, schema_editor):
    for name in ("Contact", "CannedResponse"):
        model = apps.get_model("conversations", name)
        for pk in model.objects.values_list("pk", flat=True):
            model.objects.filter(pk=pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    """Contacts and canned responses get public ids for the REST API; canned responses an owner."""

    dependencies = [
        ("conversations", "0007_automatic_sent_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField("contact", "public_id", models.UUIDField(null=True, editable=False)),
        migrations.AddField("cannedresponse", "public_id", models.UUIDField(null=True, editable=False)),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField("contact", "public_id", models.UUIDField(default=uuid.uuid4, unique=True,
                                                                       editable=False)),
        migrations.AlterField("cannedresponse", "public_id", models.UUIDField(default=uuid.uuid4, unique=True,
                                                                              editable=False)),
        migrations.AddField(
            "cannedresponse", "owner",
            models.ForeignKey(blank=True, help_text="Set: a personal response, seen by its owner only.", null=True,
                              on_delete=django.db.models.deletion.CASCADE, related_name="canned_responses",
                              to=settings.AUTH_USER_MODEL),
        ),
    ]
