"""The inbox page's own views: Test connection (its steps streamed as they finish) and Trust this certificate.

Both work on the form as the manager filled it in, saved or not, so settings can be tested
before they are saved; a blank password field means the stored one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_POST

from inboxes.connection_test import Step, connection_steps
from inboxes.connection_test.rate import REFUSED, allow_connection_test
from inboxes.connection_test.steps import StepFailed
from inboxes.connection_test.trust import SIDES, trust_certificate

# The fields a connection test reads: their errors stop it; others (a taken address) do not.
CONNECTION_FIELDS = frozenset({
    "auth_method", "imap_host", "imap_port", "imap_security", "imap_verify_cert", "imap_username", "imap_secret",
    "imap_folder", "outgoing_method", "smtp_host", "smtp_port", "smtp_security", "smtp_verify_cert",
    "smtp_username", "smtp_secret", "anymail_backend", "address",
})


@require_POST
def test_connection(request: HttpRequest, form: forms.ModelForm) -> HttpResponse:
    """One JSON object per line, each a step, sent as soon as the step is done; then {"done": true, "ok": …}."""
    if errors := _connection_errors(form):
        return JsonResponse({"error": "Correct the settings first.", "errors": errors}, status=400)
    inbox = form.instance
    if not allow_connection_test(inbox.pk or f"new-{request.user.pk}"):
        return JsonResponse({"error": REFUSED}, status=429)
    steps = connection_steps(inbox, send_test_message=request.POST.get("send_test_message") == "1")
    response = StreamingHttpResponse(_lines(steps), content_type="application/x-ndjson")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the steps back
    return response


async def _lines(steps: Iterator[Step]) -> AsyncIterator[str]:
    # An async iterator, so that the ASGI server sends each line at once (Django buffers a
    # synchronous one whole); each step's blocking network work runs in a thread.
    ok = True
    while (step := await sync_to_async(next, thread_sensitive=False)(steps, None)) is not None:
        ok = ok and step.ok
        yield json.dumps(step.as_dict()) + "\n"
    yield json.dumps({"done": True, "ok": ok}) + "\n"


@require_POST
def trust(request: HttpRequest, form: forms.ModelForm) -> JsonResponse:
    side, fingerprint = request.POST.get("side", ""), request.POST.get("fingerprint", "")
    if side not in SIDES or not fingerprint:
        return JsonResponse({"error": "Say which certificate (side: imap or smtp, and its fingerprint)."}, status=400)
    if errors := _connection_errors(form):
        return JsonResponse({"error": "Correct the settings first.", "errors": errors}, status=400)
    if form.instance.pk is None:
        return JsonResponse({"error": "Save the inbox first, then trust its certificate from its page."}, status=409)
    try:
        certificate = trust_certificate(form.instance, side, fingerprint, request.user)
    except StepFailed as failure:
        return JsonResponse({"error": failure.detail, "advice": failure.advice}, status=409)
    return JsonResponse({"trusted": side, "fingerprint": certificate["fingerprint"],
                         "message": f"The {side.upper()} certificate is trusted for this inbox; verification stays "
                                    "on. Run Test connection again."})


def _connection_errors(form: forms.ModelForm) -> dict[str, list[str]]:
    form.is_valid()
    errors = {name: list(messages) for name, messages in form.errors.items() if name in CONNECTION_FIELDS}
    if "address" in errors and not form.data.get("address"):
        return errors
    errors.pop("address", None)  # a taken address does not stop a test
    return errors
