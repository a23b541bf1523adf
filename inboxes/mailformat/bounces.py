"""Delivery failure reports (bounces) read from plain values: which message failed, to whom, why.

Two families. RFC 3464 delivery status notifications: multipart/report; report-type=
delivery-status, with a message/delivery-status part (per recipient: Final-Recipient, Action,
Status, Diagnostic-Code) and the original as message/rfc822 or text/rfc822-headers — Postfix,
Gmail and Exchange Online send these. And the shapes that predate or ignore it: a text body from
"Mail Delivery Subsystem", MAILER-DAEMON or postmaster, or under a subject such as "Undeliverable:"
or "Delivery Status Notification (Failure)", that names the failed address in prose and quotes the
original headers — older Exchange, Gmail's text notices, qmail, Exim.

Either way the Message-IDs the report quotes are what tie it to the message that failed; this
module only reads them (no database), the caller matches them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from inboxes.mailformat.charsets import clean_header, decode_bytes

MAX_REASON_LENGTH = 500
MAX_IDS = 10
MAX_RECIPIENTS = 50
_SCANNED = 64 * 1024  # of a text body or quoted part: a report puts what matters first

_ROBOT_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon", "postmaster"}
_ROBOT_NAMES = ("mail delivery subsystem", "mail delivery system", "mailer-daemon", "mail delivery service")
_FAILURE_SUBJECT = re.compile(
    r"^\s*(?:undeliverable|undelivered mail returned to sender|undeliverable mail|mail delivery failed"
    r"|delivery status notification \(failure\)|returned mail|failure notice|delivery failure"
    r"|message not delivered|mail system error|nondeliverable|non-delivery)",
    re.IGNORECASE)
_DELAY_SUBJECT = re.compile(
    r"^\s*(?:delivery status notification \(delay\)|delayed mail|warning: message .* delayed"
    r"|mail delivery delayed|delivery delayed)", re.IGNORECASE)
_QUOTED_ID = re.compile(r"(?im)^[ \t>]*Message-ID:[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]{1,900})>")
_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
# Prose that names the recipient who failed, in the shapes of the common servers.
_FAILED_IN_PROSE = [
    re.compile(rf"wasn't delivered to ({_ADDRESS})", re.IGNORECASE),  # Gmail
    re.compile(rf"Delivery to the following recipients? failed permanently:\s+({_ADDRESS})", re.IGNORECASE),
    re.compile(rf"following (?:recipient\(s\)|recipients?) (?:cannot be reached|could not be reached)"
               rf":\s+({_ADDRESS})", re.IGNORECASE),  # Exchange
    re.compile(rf"Delivery has failed to these recipients or groups:\s+(?:.*?)\(?({_ADDRESS})", re.IGNORECASE),
    re.compile(rf"following addresse?s? failed:\s+<?({_ADDRESS})", re.IGNORECASE),  # Exim
    re.compile(rf"^<({_ADDRESS})>:", re.MULTILINE),  # qmail, Postfix prose
]
_ENHANCED_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_SMTP_REPLY = re.compile(r"(?m)(?<!\d)([45]\d\d)[ -][^\r\n]{3,}")
_CONTINUATION = re.compile(r"\s+[45]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?")

# RFC 3463 subjects and details, in the words an agent understands.
_PLAIN = {
    "5.1.1": "The address does not exist",
    "5.1.2": "The recipient's domain does not exist",
    "5.1.10": "The address does not exist",
    "5.2.1": "The mailbox is disabled",
    "5.2.2": "The mailbox is full",
    "5.2.3": "The message is too large for the recipient",
    "5.4.1": "The recipient's server refused the message",
    "5.4.4": "The recipient's domain could not be reached",
    "5.7.1": "The recipient's server refused the message by its policy",
    "5.7.26": "The recipient's server refused the message: it failed sender authentication (SPF/DKIM/DMARC)",
}
_PLAIN_CLASS = {"5": "Permanent delivery failure", "4": "Delivery delayed, the server keeps trying"}


class Part(Protocol):
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class Bounce:
    original_message_ids: tuple[str, ...]  # without angle brackets, as quoted
    failed_recipients: tuple[str, ...]
    status: str  # "5.1.1", or an SMTP code such as "550", or ""
    reason: str  # plain words, then the server's own
    failed: bool  # False: only a delay (the server keeps trying)


def read_bounce(
    *, content_type: str, report_type: str, subject: str, from_address: str, from_name: str, text: str,
    parts: Sequence[Part], failed_header: str = "",
) -> Bounce | None:
    """The bounce a message is, or None when it is none. `parts` are its non-text parts (as
    parsed: message/* and text/rfc822-headers payloads as bytes); `failed_header` is the value of
    X-Failed-Recipients, which Exim and Gmail add."""
    reports = [part for part in parts if part.content_type == "message/delivery-status"]
    standard = bool(reports) or (content_type == "multipart/report" and report_type.lower() == "delivery-status")
    originals = [_text(part.payload) for part in parts
                 if part.content_type in {"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"}]
    body = text[:_SCANNED]
    robot = _robot(from_address, from_name)
    if not standard and not (robot or _FAILURE_SUBJECT.match(subject) or _DELAY_SUBJECT.match(subject)):
        return None
    ids = _ids([_head(original) for original in originals] + [body])
    if not standard and not (ids or failed_header or originals):
        return None  # a robot's words without a trace of the original: nothing to tie it to
    fields = [field for report in reports for field in _recipient_fields(_text(report.payload))]
    return _bounce(fields, ids, body, subject, failed_header)


def _bounce(fields: list[dict[str, str]], ids: tuple[str, ...], body: str, subject: str,
            failed_header: str) -> Bounce:
    if fields:
        failing = [f for f in fields if f.get("action", "failed").lower() == "failed"] or fields
        recipients = [_address(f.get("final-recipient") or f.get("original-recipient", "")) for f in failing]
        status = failing[0].get("status", "").split()[0] if failing[0].get("status") else ""
        diagnostic = _diagnostic(failing[0].get("diagnostic-code", ""))
        failed = any(f.get("action", "failed").lower() == "failed" for f in fields)
    else:
        recipients = [m.group(1) for pattern in _FAILED_IN_PROSE for m in pattern.finditer(body)]
        status, diagnostic = _status_in(body), _smtp_reply_in(body)
        failed = not _DELAY_SUBJECT.match(subject)
    recipients += [r.strip() for r in failed_header.split(",")]
    unique = tuple(dict.fromkeys(r for r in recipients if "@" in r))[:MAX_RECIPIENTS]
    return Bounce(ids, unique, status, _reason(status, diagnostic, failed), failed)


def _robot(address: str, name: str) -> bool:
    return address.lower().partition("@")[0] in _ROBOT_LOCAL_PARTS or name.strip().lower() in _ROBOT_NAMES


def _text(payload: bytes) -> str:
    return decode_bytes(payload[:_SCANNED], "utf-8")[0]


def _head(message: str) -> str:
    """The header block of a quoted message (text/rfc822-headers is all header)."""
    return re.split(r"\r?\n\r?\n", message, maxsplit=1)[0]


def _ids(texts: list[str]) -> tuple[str, ...]:
    found = [match.group(1) for text in texts for match in _QUOTED_ID.finditer(text)]
    return tuple(dict.fromkeys(found))[:MAX_IDS]


def _recipient_fields(report: str) -> list[dict[str, str]]:
    """The per-recipient field groups of a message/delivery-status body (the first group is the
    message's own: Reporting-MTA, Arrival-Date)."""
    groups = [group for group in re.split(r"\r?\n\s*\r?\n", report.replace("\r\n", "\n")) if group.strip()]
    parsed = [_fields(group) for group in groups]
    return [group for group in parsed if "final-recipient" in group or "original-recipient" in group]


def _fields(group: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in re.sub(r"\n[ \t]+", " ", group).split("\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip():
            fields.setdefault(name.strip().lower(), clean_header(value))
    return fields


def _address(value: str) -> str:
    """The address of an "rfc822; ann@example.test" typed field."""
    return value.partition(";")[2].strip().strip("<>") if ";" in value else value.strip().strip("<>")


def _diagnostic(value: str) -> str:
    text = value.partition(";")[2].strip() if value.lower().startswith(("smtp;", "x-")) else value
    # A multi-line SMTP reply repeats its code on every line ("550-5.1.1 ... 550 5.1.1 ..."): once is enough.
    code, _space, rest = text.partition(" ")
    return f"{code} {_CONTINUATION.sub(' ', rest)}".strip() if _CONTINUATION.match(" " + text) else text


def _status_in(body: str) -> str:
    match = _ENHANCED_STATUS.search(body)
    if match:
        return match.group(1)
    match = _SMTP_REPLY.search(body)
    return match.group(1) if match else ""


def _smtp_reply_in(body: str) -> str:
    match = _SMTP_REPLY.search(body)
    return clean_header(match.group(0)).rstrip(">") if match else ""


def _reason(status: str, diagnostic: str, failed: bool) -> str:
    plain = _PLAIN.get(status) or _PLAIN_CLASS.get(status[:1]) or (
        "Delivery failed" if failed else "Delivery delayed, the server keeps trying")
    reason = f"{plain}: {diagnostic}" if diagnostic else plain
    return clean_header(reason)[:MAX_REASON_LENGTH]
