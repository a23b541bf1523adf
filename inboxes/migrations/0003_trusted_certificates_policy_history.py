import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("inboxes", "0002_incoming_throttling_and_notices"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="inbox",
            name="imap_trusted_certificate",
            field=models.TextField(
                blank=True, verbose_name="trusted IMAP certificate",
                help_text="A server certificate (PEM) trusted for this inbox besides the usual ones; "
                "set by Test connection."),
        ),
        migrations.AddField(
            model_name="inbox",
            name="smtp_trusted_certificate",
            field=models.TextField(
                blank=True, verbose_name="trusted SMTP certificate",
                help_text="A server certificate (PEM) trusted for this inbox besides the usual ones; "
                "set by Test connection."),
        ),
        migrations.CreateModel(
            name="OrganisationPolicy",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("allowed_recipient_domains", models.TextField(
                    blank=True, help_text="One domain per line; replies to other domains are refused. An inbox with "
                    "domains of its own uses those instead.")),
                ("max_sends_per_hour", models.PositiveIntegerField(
                    blank=True, null=True, help_text="Replies per inbox and hour; more wait in the queue, none is "
                    "dropped. An inbox with a limit of its own uses that instead.")),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"verbose_name": "organisation policy", "verbose_name_plural": "organisation policy"},
        ),
        migrations.CreateModel(
            name="InboxChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(auto_now_add=True)),
                ("action", models.CharField(help_text="created, changed, trusted a certificate, …", max_length=40)),
                ("fields", models.JSONField(
                    default=list, help_text="Names of the settings changed; never their values.")),
                ("inbox", models.ForeignKey(
                    on_delete=django.db.models.deletion.CASCADE, related_name="changes", to="inboxes.inbox")),
                ("user", models.ForeignKey(
                    blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["-at", "-pk"]},
        ),
    ]
