import uuid

from django.db import migrations, models


def give_each_row_a_public_id(apps, schema_editor):
    model = apps.get_model("departments", "department")
    for pk in model.objects.values_list("pk", flat=True):
        model.objects.filter(pk=pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("departments", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="department", name="public_id", field=models.UUIDField(null=True, editable=False)
        ),
        migrations.RunPython(give_each_row_a_public_id, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="department",
            name="public_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
