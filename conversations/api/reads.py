"""Mark a conversation read or unread for the caller: the console's read markers, one core for both."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.conversations import visible_conversation
from conversations.api.permissions import IsPerson
from conversations.console import reads


class MarkRead(APIView):
    """Read markers are a person's: bot tokens get 404."""

    permission_classes = [IsPerson]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, conversation: Any) -> Response:
        reads.mark_read(request.user, visible_conversation(request, conversation))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, conversation: Any) -> Response:
        """Mark it unread again."""
        reads.mark_unread(request.user, visible_conversation(request, conversation))
        return Response(status=status.HTTP_204_NO_CONTENT)
