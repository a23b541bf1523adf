"""Managers' endpoints for inboxes: list, create, update (secrets write-only), status and health.

The inbox connection test (a manager's "try these settings") belongs here too, next to status.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.manage import ManagerView
from conversations.api.permissions import IsManager
from conversations.models import DeliveryStatus, QuarantineStatus
from departments.models import Department
from inboxes.history import record_inbox_change
from inboxes.models import Inbox

SECRETS = ["imap_secret", "smtp_secret", "oauth_client_secret"]
# What the server decides: the connection status, the cursor, the tokens it obtained.
STATE = ["connection_status", "last_error", "last_error_at", "last_poll_at", "last_successful_poll_at", "backlog",
         "consecutive_failures", "next_poll_at", "created_at", "updated_at"]


class InboxSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    department = serializers.SlugRelatedField(slug_field="public_id", queryset=Department.objects.all())
    has_secrets = serializers.SerializerMethodField(help_text="Which secrets are set (their values never leave).")

    class Meta:
        model = Inbox
        fields = ["id", "address", "display_name", "department", "active", "description", "sender_name",
                  "use_agent_name", "signature", "reply_to", "auth_method",
                  "imap_host", "imap_port", "imap_security", "imap_verify_cert", "imap_username", "imap_folder",
                  "poll_interval", "after_import", "after_import_folder", "max_message_bytes",
                  "outgoing_method", "smtp_host", "smtp_port", "smtp_security", "smtp_verify_cert", "smtp_username",
                  "anymail_backend", "save_to_sent", "sent_folder", "auto_acknowledge", "allowed_recipient_domains",
                  "max_sends_per_hour", "oauth_client_id", "oauth_tenant", *SECRETS, "has_secrets", *STATE]
        read_only_fields = STATE
        extra_kwargs = {name: {"write_only": True, "required": False} for name in SECRETS}

    def get_has_secrets(self, inbox: Inbox) -> dict[str, bool]:
        return {name: bool(getattr(inbox, name)) for name in SECRETS}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        probe = Inbox(**{**({f.name: getattr(self.instance, f.name) for f in Inbox._meta.concrete_fields}
                            if self.instance else {}), **data})
        try:
            probe.clean()
        except Exception as error:
            raise serializers.ValidationError(getattr(error, "message_dict", {"detail": [str(error)]})) from None
        return data


class InboxList(ManagerView, generics.ListCreateAPIView):
    serializer_class = InboxSerializer
    queryset = Inbox.objects.select_related("department")

    def perform_create(self, serializer: InboxSerializer) -> None:
        record_inbox_change(serializer.save(), self.request.user, "created")


class InboxDetail(ManagerView, generics.RetrieveUpdateAPIView):
    serializer_class = InboxSerializer
    queryset = Inbox.objects.select_related("department")
    http_method_names = ["get", "patch"]
    lookup_url_kwarg = "inbox"

    def perform_update(self, serializer: InboxSerializer) -> None:
        # The names of what was sent, never the values (a secret among them).
        record_inbox_change(serializer.save(), self.request.user, "changed", sorted(serializer.validated_data))


class InboxStatusSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    connection_status = serializers.CharField()
    healthy = serializers.BooleanField(help_text="Connected, no error, nothing failed or uncertain waiting.")
    last_error = serializers.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_poll_at = serializers.DateTimeField(allow_null=True)
    last_successful_poll_at = serializers.DateTimeField(allow_null=True)
    next_poll_at = serializers.DateTimeField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    backlog = serializers.IntegerField()
    replies = serializers.DictField(child=serializers.IntegerField(), help_text="Outgoing replies by status.")
    quarantined = serializers.IntegerField(help_text="Messages held in quarantine.")


class InboxStatus(APIView):
    permission_classes = [IsManager]

    @extend_schema(responses=InboxStatusSerializer)
    def get(self, request: Request, inbox: Any) -> Response:
        row = get_object_or_404(Inbox, public_id=inbox)
        counts = dict(row.messages.filter(delivery_status__in=[
            DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.FAILED, DeliveryStatus.UNCERTAIN,
        ]).values_list("delivery_status").annotate(n=Count("id")))
        replies = {status: counts.get(status, 0) for status in ("queued", "sending", "failed", "uncertain")}
        quarantined = row.quarantine.filter(status=QuarantineStatus.HELD).count()
        healthy = (row.connection_status == "connected" and not row.last_error
                   and not replies["failed"] and not replies["uncertain"])
        return Response(InboxStatusSerializer({
            "id": row.public_id, "healthy": healthy, "replies": replies, "quarantined": quarantined,
            **{name: getattr(row, name) for name in ("connection_status", "last_error", "last_error_at",
                                                    "last_poll_at", "last_successful_poll_at", "next_poll_at",
                                                    "consecutive_failures", "backlog")},
        }).data)
