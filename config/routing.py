"""Websocket URL routes."""

from django.urls import path

from conversations.live.consumers import ConsoleConsumer

websocket_urlpatterns = [path("ws/console/", ConsoleConsumer.as_asgi())]
