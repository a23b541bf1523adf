"""One error shape: 400 names the fields, 404 for what the caller may not see, 409 for a lost race."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from conversations.actions import Conflict
from conversations.outgoing.replies import ReplyValidationError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Conflict):
        from conversations.api.serializers import ConversationSerializer

        return Response({"detail": str(exc), "conversation": ConversationSerializer(exc.conversation).data},
                        status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ValidationError):  # actions.ActionError, ReplyValidationError
        body: dict[str, Any] = (exc.message_dict if hasattr(exc, "error_dict")
                                else {"detail": exc.messages})
        if isinstance(exc, ReplyValidationError) and exc.address:
            body = {**body, "address": exc.address}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ObjectDoesNotExist):
        exc = NotFound()
    return drf_exception_handler(exc, context)
