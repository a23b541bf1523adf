from django.contrib import admin

from config.admin_forms import SecretFieldsForm
from inboxes.models import Inbox


class InboxForm(SecretFieldsForm):
    secret_fields = ("imap_secret", "smtp_secret", "oauth_client_secret")

    class Meta:
        model = Inbox
        exclude = ["oauth_refresh_token", "oauth_access_token", "oauth_access_token_expires_at"]


@admin.register(Inbox)
class InboxAdmin(admin.ModelAdmin):
    form = InboxForm
    list_display = ["address", "display_name", "department", "active", "connection_status", "last_successful_poll_at"]
    list_filter = ["active", "connection_status", "department"]
    search_fields = ["address", "display_name"]
    readonly_fields = [
        "connection_status", "last_error", "last_error_at", "uidvalidity", "last_uid", "last_poll_at",
        "last_successful_poll_at", "backlog", "consecutive_failures", "next_poll_at",
        "history_status", "history_total", "history_done", "created_at", "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["address", "display_name", "department", "active", "description"]}),
        ("Replies", {"fields": ["sender_name", "use_agent_name", "signature", "reply_to", "auto_acknowledge"]}),
        ("Sign-in", {"fields": ["auth_method", "oauth_client_id", "oauth_client_secret", "oauth_tenant"]}),
        ("Incoming mail (IMAP)", {"fields": [
            "imap_host", "imap_port", "imap_security", "imap_verify_cert", "imap_username", "imap_secret",
            "imap_folder", "poll_interval", "after_import", "after_import_folder", "max_message_bytes",
            "import_since", "history_cutoff",
        ]}),
        ("Outgoing mail", {"fields": [
            "outgoing_method", "smtp_host", "smtp_port", "smtp_security", "smtp_verify_cert", "smtp_username",
            "smtp_secret", "anymail_backend", "save_to_sent", "sent_folder", "allowed_recipient_domains",
            "max_sends_per_hour",
        ]}),
        ("Status", {"fields": [
            "connection_status", "last_error", "last_error_at", "last_poll_at", "last_successful_poll_at",
            "backlog", "consecutive_failures", "next_poll_at", "uidvalidity", "last_uid",
            "history_status", "history_total", "history_done", "created_at", "updated_at",
        ]}),
    ]
