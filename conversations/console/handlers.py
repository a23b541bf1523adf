"""The console's writes: each parses a form, calls one action (conversations.actions), and
answers with the fragment that changed. Drafts and read markers are the console's own rows.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST
from django_htmx.http import reswap, retarget

from agents.models import Agent, Presence
from conversations import actions
from conversations.console import mentions, reads
from conversations.console.models import Draft, DraftFile, DraftMode
from conversations.console.views import conversation_context, full_page, pane_url
from conversations.live import presence as live_presence
from conversations.outgoing.replies import AttachmentUpload
from departments.models import Department
from inboxes.mailformat.sanitize import html_to_text

ASSIGNEE_NONE = "none"
MAX_DRAFT_FILES = 20


def _sidebar(request: HttpRequest, row: Any, error: str = "") -> HttpResponse:
    row = reads.get_conversation(request.user, row.public_id)
    if not request.htmx:  # a plain form post: back to the page, or the page with what went wrong
        return full_page(request, row, error=error) if error else redirect(pane_url(row), permanent=False)
    return render(request, "console/_sidebar.html", {**conversation_context(request, row), "error": error})


def _act(request: HttpRequest, conversation: uuid.UUID, do: Any) -> HttpResponse:
    row = reads.get_conversation(request.user, conversation)
    try:
        do(row)
    except actions.Conflict as conflict:
        return _sidebar(request, conflict.conversation, str(conflict))
    except ValidationError as error:
        return _sidebar(request, row, " ".join(error.messages))
    return _sidebar(request, row)


@login_required
@require_POST
def assign(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    """Assign to me or to a colleague; `expected` is who held it when the agent looked, so two claims never both win."""
    me = reads.agent_of(request.user)
    wanted = request.POST.get("agent", "me")
    expected_value = request.POST.get("expected", "")

    def do(row: Any) -> None:
        agent = me if wanted == "me" else Agent.objects.filter(public_id=_uuid(wanted)).first()
        if agent is None:
            raise actions.ActionError("assignee", "Choose an agent to assign.")
        if expected_value == ASSIGNEE_NONE:
            expected: Any = None
        elif expected_value:
            expected = Agent.objects.filter(public_id=_uuid(expected_value)).first()
        else:
            expected = actions.ANYONE
        actions.assign(row, agent, by=request.user, expected_assignee=expected)

    return _act(request, conversation, do)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@login_required
@require_POST
def unassign(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    return _act(request, conversation, lambda row: actions.unassign(row, by=request.user))


@login_required
@require_POST
def transfer(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    def do(row: Any) -> None:
        department = Department.objects.filter(public_id=_uuid(request.POST.get("department", ""))).first()
        if department is None:
            raise actions.ActionError("department", "Choose a department.")
        actions.transfer(row, department, by=request.user)

    return _act(request, conversation, do)


@login_required
@require_POST
def set_status(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    return _act(request, conversation, lambda row: actions.set_status(row, request.POST.get("status", ""),
                                                                       by=request.user))


@login_required
@require_POST
def set_priority(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    def do(row: Any) -> None:
        value = request.POST.get("priority", "")
        actions.set_priority(row, int(value) if value.isdigit() else -1, by=request.user)

    return _act(request, conversation, do)


@login_required
@require_POST
def mark_unread(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    reads.mark_unread(request.user, reads.get_conversation(request.user, conversation))
    return HttpResponse(status=204)


# ---------------------------------------------------------------------------
# The composer
# ---------------------------------------------------------------------------
def _addresses(value: str) -> list[str]:
    return [part.strip() for part in (value or "").replace(";", ",").split(",") if part.strip()]


def _composer(request: HttpRequest, row: Any, **extra: Any) -> HttpResponse:
    if not request.htmx:
        return full_page(request, row, **extra)
    context = {**conversation_context(request, row), **extra}
    response = render(request, "console/_composer.html", context)
    return reswap(retarget(response, "#composer"), "outerHTML")


def _too_large(upload: Any) -> str:
    limit = settings.API_UPLOAD_MAX_BYTES
    return f"{upload.name} is {upload.size} bytes; at most {limit} are allowed." if upload.size > limit else ""


def _uploads(request: HttpRequest, draft: Draft | None) -> list[AttachmentUpload]:
    """The draft's files, then any chosen with the send itself (a browser without scripts)."""
    files = []
    for kept in draft.files.all() if draft else ():
        with kept.file.open("rb") as stored:
            files.append(AttachmentUpload(kept.filename, stored.read(), kept.content_type))
    for upload in request.FILES.getlist("attachments"):
        if problem := _too_large(upload):
            raise actions.ActionError("attachments", problem)
        files.append(AttachmentUpload(upload.name, upload.read(),
                                      upload.content_type or "application/octet-stream"))
    return files


def _discard_draft(user: Any, row: Any) -> None:
    """The draft goes, and its files' bytes once the deletion is committed."""
    stored = [kept.file for kept in DraftFile.objects.filter(draft__user=user, draft__conversation=row)]
    Draft.objects.filter(user=user, conversation=row).delete()
    for file in stored:
        transaction.on_commit(lambda file=file: file.storage.delete(file.name))


@login_required
@require_POST
def send(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    """Send a reply or add a note. If someone else added to the conversation since the agent last
    looked (`seen`), show them what was added and ask first (`confirm` sends anyway)."""
    row = reads.get_conversation(request.user, conversation)
    post = request.POST
    mode = DraftMode.NOTE if post.get("mode") == DraftMode.NOTE else DraftMode.REPLY
    html = post.get("html", "").strip() if post.get("rich") == "1" else ""
    text = post.get("text", "")
    if html:
        text = html_to_text(html)
    seen = parse_datetime(post.get("seen", "") or "")
    if post.get("confirm") != "1":
        added = reads.added_since(row, seen, request.user)
        if added:
            return _composer(request, row, added=added, form=post, mode=mode)
    try:
        if mode == DraftMode.NOTE:
            note = actions.add_note(row, text, by=request.user)
            mentions.record_mentions(note, row.department.agents.select_related("user"))
        else:
            draft = reads.draft_for(request.user, row)
            actions.queue_reply(row, by=request.user, text=text, html=html or None, to=_addresses(post.get("to", "")),
                                cc=_addresses(post.get("cc", "")), bcc=_addresses(post.get("bcc", "")),
                                attachments=_uploads(request, draft))
        if post.get("close") == "1":
            actions.close(row, by=request.user)
    except ValidationError as error:
        return _composer(request, row, errors=error.messages, form=post, mode=mode)
    _discard_draft(request.user, row)
    reads.mark_read(request.user, row)
    row = reads.get_conversation(request.user, conversation)
    if not request.htmx:
        return redirect(pane_url(row))
    return render(request, "console/_conversation.html", {**conversation_context(request, row), "sent": mode})


@login_required
@require_POST
def save_draft(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    row = reads.get_conversation(request.user, conversation)
    fields = _draft_fields(request.POST)
    if not fields["text"].strip() and not fields["html"].strip() and not DraftFile.objects.filter(
            draft__user=request.user, draft__conversation=row).exists():
        Draft.objects.filter(user=request.user, conversation=row).delete()
    else:
        Draft.objects.update_or_create(user=request.user, conversation=row, defaults=fields)
    return HttpResponse(status=204)


def _draft_fields(post: Any) -> dict[str, Any]:
    return {"mode": DraftMode.NOTE if post.get("mode") == DraftMode.NOTE else DraftMode.REPLY,
            "text": post.get("text", "")[:200_000], "html": post.get("html", "")[:400_000],
            "to": post.get("to", "")[:5000], "cc": post.get("cc", "")[:5000], "bcc": post.get("bcc", "")[:5000],
            "updated_at": timezone.now()}


def _draft_files(request: HttpRequest, row: Any, errors: list[str] = ()) -> HttpResponse:
    draft = reads.draft_for(request.user, row)
    return render(request, "console/_draft_files.html", {
        "conversation": row, "draft_files": list(draft.files.all()) if draft else [], "file_errors": errors})


@login_required
@require_POST
def attach_files(request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
    """Files chosen in the composer are kept with the draft at once, so a reload or another tab
    still has them; what the composer holds is saved with them."""
    row = reads.get_conversation(request.user, conversation)
    chosen = request.FILES.getlist("attachments")
    errors = [problem for upload in chosen if (problem := _too_large(upload))]
    with transaction.atomic():
        draft, _ = Draft.objects.get_or_create(user=request.user, conversation=row,
                                               defaults=_draft_fields(request.POST))
        room = MAX_DRAFT_FILES - draft.files.count()
        accepted = [upload for upload in chosen if not _too_large(upload)]
        if len(accepted) > room:
            errors.append(f"A reply takes at most {MAX_DRAFT_FILES} files; "
                          f"{', '.join(u.name for u in accepted[room:])} not attached.")
            accepted = accepted[:max(room, 0)]
        for upload in accepted:
            kept = DraftFile(draft=draft, filename=(upload.name or "attachment")[:255], size=upload.size,
                             content_type=(upload.content_type or "application/octet-stream")[:255])
            kept.file.save(upload.name or "attachment", upload, save=False)
            kept.save()
    return _draft_files(request, row, errors)


@login_required
@require_POST
def remove_file(request: HttpRequest, file: uuid.UUID) -> HttpResponse:
    kept = DraftFile.objects.select_related("draft").filter(public_id=file, draft__user=request.user).first()
    if kept is None:
        raise Http404("No such file in your drafts.")
    row = reads.get_conversation(request.user, kept.draft.conversation.public_id)
    name = kept.file.name
    kept.delete()
    transaction.on_commit(lambda: kept.file.storage.delete(name))
    return _draft_files(request, row)


@login_required
@require_POST
def resend(request: HttpRequest, message: uuid.UUID) -> HttpResponse:
    row = reads.get_message(request.user, message)
    actions.resend(row, by=request.user)
    row.refresh_from_db()
    return render(request, "console/_delivery.html", {"message": row})


@login_required
@require_POST
def presence(request: HttpRequest) -> HttpResponse:
    """The presence switch. The live layer decides presence (a socket open, not away); this sets or
    clears "away" there and mirrors the result at once, as the socket's own presence message does."""
    agent = reads.agent_of(request.user)
    value = request.POST.get("presence", "")
    if agent is None or value not in (Presence.ONLINE, Presence.AWAY):
        return HttpResponseBadRequest("Choose online or away.")
    live_presence.set_away(agent.pk, value == Presence.AWAY)
    live_presence.reconcile(agent)
    return HttpResponse(status=204)
