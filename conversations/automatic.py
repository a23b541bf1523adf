"""Recognising automatic mail (RFC 3834 and the de-facto headers), so nothing automatic answers it.

A false positive costs an acknowledgement that is not sent; a false negative can start a mail
loop between two robots. So any one sign is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

_PRECEDENCE_AUTOMATIC = {"bulk", "list", "junk", "auto_reply"}
_ROBOT_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon"}
_REPORT_TYPES = {"multipart/report", "message/delivery-status", "message/disposition-notification"}


def automatic_reason(
    header: Callable[[str], str | None],
    *,
    content_type: str,
    from_address: str,
    own_addresses: Collection[str] = (),
) -> str:
    """Why the message is automatic, in plain words; empty when it looks written by a person.

    `header(name)` returns the decoded value of the first such header or None when absent.
    `own_addresses` are the addresses of our inboxes, lower-cased.
    """
    auto_submitted = header("Auto-Submitted")
    if auto_submitted is not None:
        keyword = auto_submitted.split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            return f"Auto-Submitted: {keyword}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = header(name)
        if value is not None and value.strip().lower() not in {"no", "false", "0"}:
            return f"{name} header"
    precedence = (header("Precedence") or "").strip().lower()
    if precedence in _PRECEDENCE_AUTOMATIC:
        return f"Precedence: {precedence}"
    suppress = header("X-Auto-Response-Suppress")
    if suppress is not None and suppress.strip().lower() not in {"", "none"}:
        return f"X-Auto-Response-Suppress: {suppress.strip()}"
    for name in ("List-Id", "List-Unsubscribe"):
        if header(name) is not None:
            return f"Mailing list ({name})"
    if content_type.lower() in _REPORT_TYPES:
        return f"Delivery or read report ({content_type.lower()})"
    return_path = header("Return-Path")
    if return_path is not None and return_path.strip() in {"<>", ""}:
        return "Empty Return-Path (<>): a bounce or other automatic notice"
    address = from_address.lower()
    if address.partition("@")[0] in _ROBOT_LOCAL_PARTS:
        return f"Sent by {address}"
    if address and address in own_addresses:
        return f"Sent from our own inbox {address}"
    return ""
