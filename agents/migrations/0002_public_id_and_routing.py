import uuid

from django.db import migrations, models


def give_each_row_a_public_id(apps, schema_editor):
    model = apps.get_model("agents", "agent")
    for pk in model.objects.values_list("pk", flat=True):
        model.objects.filter(pk=pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]

    operations = [
        migrations.AddField(model_name="agent", name="public_id", field=models.UUIDField(null=True, editable=False)),
        migrations.RunPython(give_each_row_a_public_id, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="agent",
            name="public_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AddField(
            model_name="agent",
            name="enabled",
            field=models.BooleanField(
                default=True, help_text="A disabled agent is assigned nothing (AI agents are online while enabled)."
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="last_assigned_at",
            field=models.DateTimeField(
                blank=True, null=True, help_text="When routing last gave this agent a conversation."
            ),
        ),
    ]
