from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from agents.models import AgentKind
from conversations import actions
from conversations.incoming.ingest import discard_quarantined, retry_quarantined
from conversations.models import (
    Attachment,
    AutomaticReplyRefusal,
    CannedResponse,
    Contact,
    Conversation,
    ConversationActivity,
    Message,
    QuarantinedMessage,
    QuarantineStatus,
)
from conversations.routing.handoff import hand_off


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

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ActivityInline(admin.TabularInline):
    model = ConversationActivity
    fields = ["created_at", "actor_label", "verb", "details"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Conversations come from mail; a manager changes them only through the actions."""

    list_display = ["subject", "inbox", "contact", "status", "assignee", "priority", "last_message_at"]
    list_filter = ["status", "priority", "inbox", "department", "archived"]
    search_fields = ["subject", "contact__address", "public_id"]
    raw_id_fields = ["assignee"]
    # What the actions change; everything else is the mail's record.
    editable = ("subject", "status", "priority", "department", "assignee")
    readonly_fields = ["public_id", "inbox", "contact", "previous", "archived", "routing_reason", "created_at",
                       "updated_at", "last_message_at", "closed_at", "assigned_at", "queued_at"]
    inlines = [MessageInline, ActivityInline]
    actions = ["hand_off_to_a_person"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Hand off the selected AI agents' conversations to a person", permissions=["change"])
    def hand_off_to_a_person(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        """Each one goes to its department's human queue with a note naming the manager."""
        handed, skipped = 0, 0
        for conversation in queryset.select_related("assignee"):
            if conversation.assignee is None or conversation.assignee.kind != AgentKind.AI:
                skipped += 1
                continue
            hand_off(conversation, f"{request.user.get_username()} handed it over from the admin")
            handed += 1
        if handed:
            self.message_user(request, f"Handed {handed} conversation(s) to the human queue.", level=messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Left {skipped} conversation(s) alone: they are not assigned to an AI agent.",
                              level=messages.WARNING)

    def save_model(self, request: HttpRequest, obj: Conversation, form: Any, change: bool) -> None:
        """Each changed field goes through its action, which records the manager and sends the events."""
        changed = set(form.changed_data)
        current = Conversation.objects.get(pk=obj.pk)
        by = request.user
        try:
            if "subject" in changed:
                actions.set_subject(current, obj.subject, by=by)
            if "status" in changed:
                actions.set_status(current, obj.status, by=by)
            if "priority" in changed:
                actions.set_priority(current, obj.priority, by=by)
            if "department" in changed:
                current = actions.transfer(current, obj.department, by=by)
            if "assignee" in changed:
                if obj.assignee is None:
                    actions.unassign(current, by=by)
                else:
                    actions.assign(current, obj.assignee, by=by)
        except actions.ActionError as error:
            self.message_user(request, " ".join(error.messages), level=messages.ERROR)

    def get_fields(self, request: HttpRequest, obj: Conversation | None = None) -> list[str]:
        return [*self.editable, *self.readonly_fields]


class AttachmentInline(admin.TabularInline):
    model = Attachment
    fields = ["filename", "content_type", "size", "inline", "content_id"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
    list_filter = ["direction", "kind", "delivery_status", "sent_copy_status", "is_automatic", "message_id_conflict",
                   "too_large"]
    search_fields = ["subject", "from_address", "message_id", "public_id"]
    raw_id_fields = ["conversation", "author"]
    readonly_fields = ["public_id", "download", "raw_sha256", "raw_size", "content_hash", "delivery_history",
                       "sent_copy_status", "sent_copy_attempts", "sent_copy_next_attempt_at", "sent_copy_error"]
    exclude = ["raw"]
    inlines = [AttachmentInline]
    actions = ["resend"]

    # Messages are the record of what arrived and what left: read-only here. Replies and notes
    # are written by the actions (console, API), never by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    @admin.action(description="Resend selected uncertain or failed replies (same Message-ID)", permissions=["view"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        resent = sum(actions.resend(message, by=request.user)
                     for message in queryset.select_related("conversation")
                     .filter(delivery_status__in=["uncertain", "failed"]))
        skipped = queryset.count() - resent
        self.message_user(request, f"{resent} queued again; {skipped} skipped (not uncertain or failed).")


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ["title", "scope", "updated_at"]
    list_filter = [("department", admin.EmptyFieldListFilter), "department"]
    list_select_related = ["department"]
    search_fields = ["title", "body"]

    @admin.display(description="For", ordering="department__name")
    def scope(self, canned: CannedResponse) -> str:
        return canned.department.name if canned.department_id else "Shared (every department)"


@admin.register(QuarantinedMessage)
class QuarantinedMessageAdmin(RawDownload, admin.ModelAdmin):
    """Poison mail, for managers: read the error, download the raw message, retry or discard it."""

    list_display = ["inbox", "error", "status", "imap_uid", "raw_size", "created_at", "download"]
    list_filter = ["status", "inbox"]
    search_fields = ["error"]
    date_hierarchy = "created_at"
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


@admin.register(AutomaticReplyRefusal)
class AutomaticReplyRefusalAdmin(admin.ModelAdmin):
    """What the loop guard did not send, and why: a record, read only."""

    list_display = ["created_at", "inbox", "kind", "rule", "reason", "message"]
    list_filter = ["kind", "rule", "inbox"]
    search_fields = ["reason", "message__from_address", "message__subject"]
    list_select_related = ["inbox", "message"]
    readonly_fields = ["inbox", "conversation", "message", "kind", "rule", "reason", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AutomaticReplyRefusal | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AutomaticReplyRefusal | None = None) -> bool:
        return False
