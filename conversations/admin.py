from django.contrib import admin
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from conversations.ingest import discard_quarantined, retry_quarantined
from conversations.models import (
    Attachment,
    CannedResponse,
    Contact,
    Conversation,
    Message,
    QuarantinedMessage,
    QuarantineStatus,
)


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["address", "name", "created_at"]
    search_fields = ["address", "name"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["direction", "kind", "from_address", "subject", "delivery_status", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["subject", "inbox", "contact", "status", "assignee", "priority", "last_message_at"]
    list_filter = ["status", "priority", "inbox", "department", "archived"]
    search_fields = ["subject", "contact__address", "public_id"]
    raw_id_fields = ["contact", "assignee", "previous"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
    inlines = [MessageInline]


class AttachmentInline(admin.TabularInline):
    model = Attachment
    fields = ["filename", "content_type", "size", "inline", "content_id"]
    readonly_fields = fields
    extra = 0


class RawDownload:
    """A "Download .eml" link and view for a model that keeps a message's raw bytes in `raw`.

    Served as a download, never rendered: incoming bytes are hostile by definition. The file
    itself is not editable in the form.
    """

    raw_name = "message"

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.download_view)
        name = f"{self.model._meta.app_label}_{self.model._meta.model_name}_raw"
        return [path("<int:pk>/raw/", view, name=name), *super().get_urls()]

    @admin.display(description="Raw message")
    def download(self, obj: Message | QuarantinedMessage) -> str:
        if not obj.pk or not obj.raw:
            return "-"
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_raw", args=[obj.pk])
        return format_html('<a href="{}">Download .eml ({} bytes)</a>', url, obj.raw_size)

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        row = self.model.objects.filter(pk=pk).first()
        if row is None or not row.raw or not self.has_view_permission(request, row):
            raise Http404(f"No such {self.model._meta.verbose_name}.")
        return FileResponse(
            row.raw.open("rb"), as_attachment=True, filename=f"{self.raw_name}-{row.public_id}.eml",
            content_type="application/octet-stream",
        )


@admin.register(Message)
class MessageAdmin(RawDownload, admin.ModelAdmin):
    """Messages both ways; the raw bytes as they arrived, or as they left (composed when queued)."""

    list_display = [
        "subject", "inbox", "direction", "kind", "from_address", "delivery_status", "is_automatic", "created_at",
    ]
    list_filter = ["direction", "kind", "delivery_status", "is_automatic", "message_id_conflict", "too_large"]
    search_fields = ["subject", "from_address", "message_id", "public_id"]
    raw_id_fields = ["conversation", "author"]
    readonly_fields = ["public_id", "download", "raw_sha256", "raw_size", "content_hash", "delivery_history"]
    exclude = ["raw"]
    inlines = [AttachmentInline]
    actions = ["resend"]

    @admin.action(description="Resend selected uncertain or failed replies (same Message-ID)")
    def resend(self, request, queryset):
        from conversations.delivery import resend_message

        ids = queryset.filter(delivery_status__in=["uncertain", "failed"]).values_list("pk", flat=True)
        resent = sum(resend_message(pk, by=request.user.get_username()) for pk in ids)
        skipped = queryset.count() - resent
        self.message_user(request, f"{resent} queued again; {skipped} skipped (not uncertain or failed).")


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ["title", "department", "updated_at"]
    list_filter = ["department"]
    search_fields = ["title", "body"]


@admin.register(QuarantinedMessage)
class QuarantinedMessageAdmin(RawDownload, admin.ModelAdmin):
    """Poison mail, for managers: read the error, download the raw message, retry or discard it."""

    list_display = ["inbox", "error", "status", "imap_uid", "raw_size", "created_at", "download"]
    list_filter = ["status", "inbox"]
    readonly_fields = [f.name for f in QuarantinedMessage._meta.fields if f.name != "raw"] + ["download"]
    exclude = ["raw"]
    actions = ["retry", "discard"]
    raw_name = "quarantined"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry importing the selected messages", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[QuarantinedMessage]) -> None:
        imported = still_failing = 0
        for row_id in queryset.filter(status=QuarantineStatus.HELD).values_list("pk", flat=True):
            result = retry_quarantined(row_id)
            if result.message is not None:
                imported += 1
            else:
                still_failing += 1
        self.message_user(request, f"{imported} imported, {still_failing} still failing.")

    @admin.action(description="Discard the selected messages", permissions=["change"])
    def discard(self, request: HttpRequest, queryset: QuerySet[QuarantinedMessage]) -> None:
        row_ids = list(queryset.filter(status=QuarantineStatus.HELD).values_list("pk", flat=True))
        for row_id in row_ids:
            discard_quarantined(row_id)
        self.message_user(request, f"{len(row_ids)} discarded.")
