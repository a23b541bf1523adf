"""The console's pages and fragments: thin views that read through conversations.console.reads.

A full page renders the list, and the open conversation if any; htmx asks for the same views
and gets only the fragment it swaps in (the list, the conversation pane, one message's frame
or delivery state), so a live event costs one small HTTP request, not a reload.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from conversations.api import canned
from conversations.console import reads
from conversations.console import render as show
from conversations.models import ConversationStatus, Direction, MessageKind, Priority
from conversations.permissions import is_manager
from departments.models import Department


def _base(request: HttpRequest, filters: reads.Filters) -> dict[str, Any]:
    open_count, capacity = reads.workload(request.user)
    agent = reads.agent_of(request.user)
    return {
        "filters": filters, "is_manager": is_manager(request.user), "agent": agent,
        "open_count": open_count, "capacity": capacity, "statuses": reads.STATUSES,
        "priorities": Priority.choices, "inboxes": reads.visible_inboxes(request.user),
    }


def _list_context(request: HttpRequest, filters: reads.Filters) -> dict[str, Any]:
    rows, more = reads.list_conversations(request.user, filters)
    older = urlencode(filters.query(before=rows[-1].last_message_at.isoformat())) if more and rows else None
    return {"rows": rows, "older": older, "counts": reads.view_counts(request.user, filters), "filters": filters,
            "is_manager": is_manager(request.user), "list_query": urlencode(filters.query())}


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    filters = reads.Filters.parse(request.GET, is_manager(request.user))
    context = {**_base(request, filters), **_list_context(request, filters), "title": "Conversations"}
    return render(request, "console/index.html", context)


@login_required
@require_GET
def conversation_list(request: HttpRequest) -> HttpResponse:
    filters = reads.Filters.parse(request.GET, is_manager(request.user))
    template = "console/_rows.html" if filters.before else "console/_list.html"
    # The header's own count rides along, so "3 open of 10" follows the list.
    workload = reads.workload(request.user) if reads.agent_of(request.user) else None
    return render(request, template, {**_list_context(request, filters), "refreshed": True, "workload": workload})


def conversation_context(request: HttpRequest, conversation: Any) -> dict[str, Any]:
    messages = reads.thread(conversation)
    for message in messages:
        _decorate(message)
    draft = reads.draft_for(request.user, conversation)
    agent = reads.agent_of(request.user)
    newest = messages[-1].created_at if messages else conversation.created_at
    contact = conversation.contact
    return {
        "conversation": conversation, "messages": messages, "draft": draft, "agent": agent,
        "seen": newest.isoformat(), "opened_at": timezone.now().isoformat(),
        "colleagues": reads.colleagues(conversation),
        "departments": Department.objects.exclude(pk=conversation.department_id).order_by("name"),
        "others": reads.other_conversations(request.user, conversation),
        "statuses": ConversationStatus.choices, "priorities": Priority.choices,
        "reply_to": _reply_all(conversation, messages),
        "mine": agent is not None and conversation.assignee_id == agent.pk,
        "contact": contact, "mode": draft.mode if draft else "reply",
        "draft_files": list(draft.files.all()) if draft else [],
    }


def _decorate(message: Any) -> None:
    """What the template needs of a message, worked out once: its parts, its frame, its kind."""
    message.is_note = message.kind == MessageKind.NOTE
    message.incoming = message.direction == Direction.IN
    attachments = list(message.attachments.all())
    # Our own replies show their text part, as the agent wrote it; customers' HTML goes in a frame.
    if message.html and message.incoming:
        frame = show.html_frame(message, attachments)
        message.frame, message.frame_height = frame, show.frame_height(frame.lines)
        message.files = [a for a in attachments if a.content_id.strip("<>").lower() not in frame.inline]
    else:
        message.frame = None
        message.files = attachments
    message.parts = show.text_parts(message.text or "") if not message.frame else ()
    for attachment in message.files:
        attachment.raster = attachment.content_type.split(";")[0].strip().lower() in show.RASTER


def _reply_all(conversation: Any, messages: list[Any]) -> dict[str, str]:
    """To/Cc for reply-all: the last customer message's sender and its other recipients, less our own address."""
    ours = {conversation.inbox.address.lower()}
    last = next((m for m in reversed(messages) if m.incoming and not m.is_note), None)
    if last is None:
        return {"to": conversation.contact.address, "cc": ""}
    sender = (last.reply_to[0]["address"] if last.reply_to else last.from_address) or conversation.contact.address
    seen = ours | {sender.lower()}
    cc = []
    for person in [*last.to, *last.cc]:
        address = (person.get("address") or "").strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            cc.append(address)
    return {"to": sender, "cc": ", ".join(cc)}


@login_required
@require_GET
def conversation_page(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    row = reads.get_conversation(request.user, conversation)
    reads.mark_read(request.user, row)
    if request.htmx and request.htmx.target == "conversation":
        return render(request, "console/_conversation.html", conversation_context(request, row))
    return full_page(request, row)


def full_page(request: HttpRequest, row: Any, **extra: Any) -> HttpResponse:
    """The whole console with this conversation open: its own address, and the answer to a form
    posted without htmx (JavaScript off, or a click before htmx took over a fresh fragment)."""
    filters = reads.Filters.parse(request.GET, is_manager(request.user))
    return render(request, "console/index.html", {**_base(request, filters), **_list_context(request, filters),
                                                  **conversation_context(request, row), **extra,
                                                  "title": row.subject or "(no subject)"})


@login_required
@require_GET
def thread_fragment(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    row = reads.get_conversation(request.user, conversation)
    reads.mark_read(request.user, row)
    return render(request, "console/_thread.html", conversation_context(request, row))


@login_required
@require_GET
def sidebar_fragment(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    row = reads.get_conversation(request.user, conversation)
    return render(request, "console/_sidebar.html", conversation_context(request, row))


@login_required
@require_GET
def message_frame(request: HttpRequest, message: uuid.UUID) -> HttpResponse:
    """One message's HTML frame, with remote images when the agent asked for them."""
    row = reads.get_message(request.user, message)
    row.is_note = False
    attachments = list(row.attachments.all())
    frame = show.html_frame(row, attachments, load_remote=request.GET.get("images") == "1")
    row.frame, row.frame_height = frame, show.frame_height(frame.lines)
    return render(request, "console/_frame.html", {"message": row, "images_loaded": request.GET.get("images") == "1"})


@login_required
@require_GET
def message_status(request: HttpRequest, message: uuid.UUID) -> HttpResponse:
    row = reads.get_message(request.user, message)
    return render(request, "console/_delivery.html", {"message": row})


@login_required
@require_GET
def canned_responses(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    """Canned responses whose title matches, each with its variables already filled in."""
    row = reads.get_conversation(request.user, conversation)
    query = (request.GET.get("canned_q") or "").strip()
    rows = canned.usable(request)
    if query:
        rows = rows.filter(title__icontains=query)
    agent = reads.agent_of(request.user)
    found = [(response, canned.render(response.body, row, agent)) for response in rows.order_by("title")[:20]]
    return render(request, "console/_canned.html", {"found": found, "query": query})


def pane_url(conversation: Any) -> str:
    return reverse("console:conversation", args=[conversation.public_id])
