"""Managers' endpoint for an inbox's connection test: every step, timed, with what to do when one fails."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.permissions import IsManager
from inboxes.connection_test import run_connection_test
from inboxes.connection_test.rate import REFUSED, allow_connection_test
from inboxes.models import Inbox


class ConnectionTestRequest(serializers.Serializer):
    send_test_message = serializers.BooleanField(
        default=False, help_text="Also send a message from the inbox to itself and wait for it to arrive.")


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    seconds = serializers.FloatField()
    detail = serializers.CharField(allow_blank=True)
    advice = serializers.CharField(allow_blank=True, help_text="What to do, when the step failed.")
    data = serializers.DictField(help_text="Counts, folders, the server's certificate (subject, issuer, fingerprint).")


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    steps = StepSerializer(many=True)


class InboxConnectionTest(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=ConnectionTestRequest, responses=ConnectionTestSerializer)
    def post(self, request: Request, inbox: Any) -> Response:
        row = get_object_or_404(Inbox, public_id=inbox)
        options = ConnectionTestRequest(data=request.data)
        options.is_valid(raise_exception=True)
        if not allow_connection_test(row.pk):
            return Response({"detail": REFUSED}, status=429)
        return Response(run_connection_test(row, send_test_message=options.validated_data["send_test_message"]))
