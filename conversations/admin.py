from django.contrib import admin

from conversations.models import (
    Attachment,
    CannedResponse,
    Contact,
    Conversation,
    Message,
    QuarantinedMessage,
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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "subject", "inbox", "direction", "kind", "from_address", "delivery_status", "is_automatic", "created_at",
    ]
    list_filter = ["direction", "kind", "delivery_status", "is_automatic", "message_id_conflict", "too_large"]
    search_fields = ["subject", "from_address", "message_id", "public_id"]
    raw_id_fields = ["conversation", "author"]
    readonly_fields = ["public_id", "raw_sha256", "raw_size", "content_hash", "delivery_history"]
    inlines = [AttachmentInline]


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ["title", "department", "updated_at"]
    list_filter = ["department"]
    search_fields = ["title", "body"]


@admin.register(QuarantinedMessage)
class QuarantinedMessageAdmin(admin.ModelAdmin):
    list_display = ["inbox", "error", "status", "imap_uid", "created_at"]
    list_filter = ["status", "inbox"]
    readonly_fields = [f.name for f in QuarantinedMessage._meta.fields]
