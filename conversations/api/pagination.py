"""Cursor pagination: stable under inserts, and no COUNT(*) over a million rows."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-id"


class ByLastActivity(Cursor):
    ordering = ("-last_message_at", "-id")


class Chronological(Cursor):
    ordering = ("created_at", "id")
