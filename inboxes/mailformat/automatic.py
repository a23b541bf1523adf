"""Recognising automatic mail (RFC 3834 and the de-facto headers), so nothing automatic answers it.

A false positive costs an acknowledgement that is not sent; a false negative can start a mail
loop between two robots. So any one sign is enough — but only a sign that the message itself
was sent by a program. Headers that merely ask others not to answer automatically
(X-Auto-Response-Suppress, which Outlook puts on ordinary mail) or that name the service that
relayed a message (Feedback-ID, which email services stamp on transactional mail such as a web
form's copy of a customer's question) say nothing about who wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

Header = Callable[[str], str | None]

_PRECEDENCE_AUTOMATIC = {"bulk", "list", "junk", "auto_reply"}
_ROBOT_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon"}
_REPORT_TYPES = {"multipart/report", "message/delivery-status", "message/disposition-notification"}
# Vendor autoresponders' own marks (vacation programs, helpdesks, Exim and qmail autoresponders).
_AUTORESPONDER_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response",
                          "X-AutoReply-From", "X-Mail-Autoreply")
_FALSE_VALUES = {"no", "false", "0"}
# List mail (RFC 2369, RFC 2919): sent to many by a list manager, never answered automatically.
_LIST_HEADERS = ("List-Id", "List-Unsubscribe")


def automatic_reason(
    header: Header,
    *,
    content_type: str,
    from_address: str,
    own_addresses: Collection[str] = (),
) -> str:
    """Why the message is automatic, in plain words; empty when it looks written by a person.

    `header(name)` returns the decoded value of the first such header or None when absent.
    `own_addresses` are the addresses of our inboxes, lower-cased.
    """
    for sign in (_auto_submitted, _autoresponder, _precedence, _list_mail, _failed_recipients):
        reason = sign(header)
        if reason:
            return reason
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


def _auto_submitted(header: Header) -> str:
    # RFC 3834 §5: any keyword but "no" (auto-generated, auto-replied, auto-notified, extensions).
    value = header("Auto-Submitted")
    keyword = (value or "").split(";", 1)[0].strip().lower()
    return f"Auto-Submitted: {keyword}" if keyword and keyword != "no" else ""


def _autoresponder(header: Header) -> str:
    for name in _AUTORESPONDER_HEADERS:
        value = header(name)
        if value is not None and value.strip().lower() not in _FALSE_VALUES:
            return f"{name} header"
    return ""


def _precedence(header: Header) -> str:
    for name in ("Precedence", "X-Precedence"):
        value = (header(name) or "").strip().lower()
        if value in _PRECEDENCE_AUTOMATIC:
            return f"{name}: {value}"
    return ""


def _list_mail(header: Header) -> str:
    for name in _LIST_HEADERS:
        if header(name) is not None:
            return f"Mailing list ({name})"
    return ""


def _failed_recipients(header: Header) -> str:
    # Exim's and Gmail's bounces name the failed addresses here even when not multipart/report.
    value = header("X-Failed-Recipients")
    return "Bounce (X-Failed-Recipients)" if value is not None and value.strip() else ""


def suppressed_auto_replies(header: Header) -> str:
    """The X-Auto-Response-Suppress value when it asks for no auto-replies (All, AutoReply), else "".

    A request about our answer, not a sign about the message (Microsoft's [MS-OXCMAIL]: a list
    of DR, NDR, RN, NRN, OOF, AutoReply, All); an acknowledgement is an auto-reply and honours it.
    """
    value = (header("X-Auto-Response-Suppress") or "").strip()
    tokens = {token.strip().lower() for token in value.replace(";", ",").split(",")}
    return value if tokens & {"all", "autoreply"} else ""
