"""A person's own API tokens: list, create (the secret is shown in this answer only), revoke."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.models import ApiToken
from conversations.api.pagination import Cursor
from conversations.api.permissions import IsPerson


class TokenSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]


class NewTokenSerializer(TokenSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once, now: only its hash is stored.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "secret"]


class TokenList(generics.ListAPIView):
    serializer_class = TokenSerializer
    pagination_class = Cursor
    permission_classes = [IsPerson]

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(request=TokenSerializer, responses={201: NewTokenSerializer})
    def post(self, request: Request) -> Response:
        data = TokenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token = ApiToken(name=data.validated_data["name"], user=request.user, created_by=request.user)
        secret = token.new_secret()
        token.save()
        token.secret = secret
        return Response(NewTokenSerializer(token).data, status=status.HTTP_201_CREATED)


class TokenRevoke(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token: Any) -> Response:
        get_object_or_404(ApiToken, user=request.user, public_id=token).revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)
