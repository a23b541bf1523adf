"""The inbox admin: the form in sections, Test connection, the status badge, notices and change history."""

from __future__ import annotations

import ssl

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from django.utils.html import format_html

from inboxes import admin_views
from inboxes.admin_form import InboxForm
from inboxes.connection_test import run_connection_test
from inboxes.connection_test.rate import REFUSED, allow_connection_test
from inboxes.connection_test.steps import describe
from inboxes.history import InboxChange, record_inbox_change
from inboxes.models import Inbox
from inboxes.policy import OrganisationPolicy
from inboxes.status import inbox_badge, policy_notices

STATUS_FIELDS = [
    "status_badge", "last_error", "last_error_at", "outgoing_status", "outgoing_last_error", "outgoing_last_error_at",
    "outgoing_retry_at", "last_poll_at", "last_successful_poll_at", "next_poll_at", "backlog", "consecutive_failures",
    "last_notice", "trusted_certificates", "uidvalidity", "uidvalidity_changed_at", "last_uid", "history_status",
    "history_total", "history_done", "created_at", "updated_at",
]


@admin.register(Inbox)
class InboxAdmin(admin.ModelAdmin):
    form = InboxForm
    change_form_template = "admin/inboxes/inbox/change_form.html"
    list_display = ["address", "display_name", "department", "active", "status_badge", "last_successful_poll_at"]
    list_filter = ["active", "connection_status", "outgoing_status", "department"]
    search_fields = ["address", "display_name"]
    readonly_fields = STATUS_FIELDS
    actions = ["test_connections"]
    fieldsets = [
        ("General", {"fields": ["address", "display_name", "department", "active", "description"]}),
        ("Incoming mail (IMAP)", {"fields": [
            "preset", "imap_host", "imap_port", "imap_security", "imap_verify_cert", "imap_username", "imap_secret",
            "imap_folder", "poll_interval", "after_import", "after_import_folder",
        ]}),
        ("Outgoing mail", {"fields": [
            "outgoing_method", "smtp_host", "smtp_port", "smtp_security", "smtp_verify_cert", "smtp_same_as_incoming",
            "smtp_username", "smtp_secret", "anymail_backend", "save_to_sent", "sent_folder",
        ]}),
        ("Authentication", {"fields": ["auth_method", "oauth_client_id", "oauth_client_secret", "oauth_tenant"],
                            "description": "Password sign-in needs nothing here. For Microsoft or Google OAuth, "
                                           "the app registration's client id, secret and tenant."}),
        ("Behaviour", {"fields": [
            "sender_name", "use_agent_name", "signature", "reply_to", "auto_acknowledge", "allowed_recipient_domains",
            "max_sends_per_hour", "max_message_bytes", "import_since", "history_cutoff",
        ]}),
        ("Status", {"fields": STATUS_FIELDS, "classes": ["collapse"]}),
    ]

    @admin.display(description="Status", ordering="connection_status")
    def status_badge(self, inbox: Inbox) -> str:
        badge = inbox_badge(inbox)
        return format_html('<span class="sb-badge sb-badge--{}" title="{}">{}</span>', badge.tone, badge.why,
                           badge.label)

    @admin.display(description="Trusted certificates")
    def trusted_certificates(self, inbox: Inbox) -> str:
        shown = [f"{side.upper()}: SHA-256 {describe_pem(pem)}" for side, pem in
                 (("imap", inbox.imap_trusted_certificate), ("smtp", inbox.smtp_trusted_certificate)) if pem]
        return "; ".join(shown) or "None (only the system's and MAIL_CA_FILE's authorities)."

    # --- the page ------------------------------------------------------------------------
    def get_urls(self):
        test, trust = self._form_view(admin_views.test_connection), self._form_view(admin_views.trust)
        own = [
            path("add/test-connection/", self.admin_site.admin_view(test), name="inboxes_inbox_add_test_connection"),
            path("<path:object_id>/test-connection/", self.admin_site.admin_view(test),
                 name="inboxes_inbox_test_connection"),
            path("<path:object_id>/trust-certificate/", self.admin_site.admin_view(trust),
                 name="inboxes_inbox_trust_certificate"),
        ]
        return own + super().get_urls()

    def _form_view(self, view):
        """`view(request, form)` on the form as the manager filled it in, saved or not: they test before saving."""
        def wrapped(request: HttpRequest, object_id: str | None = None) -> HttpResponse:
            stored = None
            if object_id is not None:
                stored = self.get_object(request, object_id)
                if stored is None or not self.has_change_permission(request, stored):
                    raise Http404("No such inbox.")
            elif not self.has_add_permission(request):
                raise Http404("No such inbox.")
            form = self.get_form(request, stored, change=stored is not None)(request.POST or None, instance=stored)
            return view(request, form)
        return wrapped

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        inbox = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if inbox is not None:
            extra.update(badge=inbox_badge(inbox), notices=policy_notices(inbox),
                         changes=InboxChange.objects.filter(inbox=inbox).select_related("user")[:50])
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def save_model(self, request: HttpRequest, inbox: Inbox, form: InboxForm, change: bool) -> None:
        super().save_model(request, inbox, form, change)
        if not change:
            record_inbox_change(inbox, request.user, "created")
        elif fields := form.changed_settings():
            record_inbox_change(inbox, request.user, "changed", fields)

    # --- actions ------------------------------------------------------------------------
    @admin.action(description="Test the connection of the selected inboxes", permissions=["change"])
    def test_connections(self, request: HttpRequest, queryset: QuerySet[Inbox]) -> None:
        for inbox in queryset:
            if not allow_connection_test(inbox.pk):
                self.message_user(request, f"{inbox.address}: {REFUSED}", messages.WARNING)
                continue
            result = run_connection_test(inbox)
            failed = next((step for step in result["steps"] if not step["ok"]), None)
            if failed is None:
                self.message_user(request, f"{inbox.address}: every step passed.", messages.SUCCESS)
            else:
                self.message_user(request, f"{inbox.address}: {failed['name']} failed. {failed['detail']} "
                                  f"{failed['advice']}", messages.ERROR)


def describe_pem(pem: str) -> str:
    try:
        return describe(ssl.PEM_cert_to_DER_cert(pem.strip()))["fingerprint"]
    except ValueError:
        return "(unreadable)"


@admin.register(OrganisationPolicy)
class OrganisationPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "max_sends_per_hour", "updated_at"]
    fields = ["allowed_recipient_domains", "max_sends_per_hour"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # One policy for the organisation.
        return super().has_add_permission(request) and not OrganisationPolicy.objects.exists()
