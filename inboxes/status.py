"""An inbox's status at a glance: one badge from what the last poll and the last send did, and the notices."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from inboxes.models import AuthMethod, ConnectionStatus, Inbox, OutgoingMethod, OutgoingStatus
from inboxes.policy import OrganisationPolicy


@dataclass(frozen=True)
class Badge:
    label: str
    tone: str  # the CSS modifier: "off", "waiting", "ok", "warning", "error"
    why: str


def inbox_badge(inbox: Inbox) -> Badge:
    """Not connected, Configured, Awaiting authorization, Connected (or Throttled), Error."""
    if inbox.connection_status == ConnectionStatus.ERROR:
        return Badge("Error", "error", f"Reading mail failed: {inbox.last_error}")
    if inbox.outgoing_status == OutgoingStatus.ERROR:
        return Badge("Error", "error", f"Sending failed: {inbox.outgoing_last_error}")
    if inbox.auth_method != AuthMethod.PASSWORD and not inbox.oauth_refresh_token:
        return Badge("Awaiting authorization", "waiting", "Sign in with the provider to authorise Switchboard.")
    if inbox.connection_status == ConnectionStatus.THROTTLED:
        return Badge("Connected", "warning", "The server asked Switchboard to slow down; polls pause for a while.")
    if inbox.connection_status == ConnectionStatus.CONNECTED:
        return Badge("Connected", "ok", "The last poll worked.")
    if _configured(inbox):
        return Badge("Configured", "waiting", "Settings are complete; the first poll has not run yet.")
    return Badge("Not connected", "off", "Fill in the incoming and outgoing settings, then test the connection.")


def next_poll_at(inbox: Inbox) -> dt.datetime | None:
    """When the next poll is due: after a backoff, else a poll interval after the last one; None: now."""
    if inbox.next_poll_at is not None:
        return inbox.next_poll_at
    if inbox.last_poll_at is not None:
        return inbox.last_poll_at + dt.timedelta(seconds=inbox.poll_interval)
    return None


def _configured(inbox: Inbox) -> bool:
    incoming = bool(inbox.imap_host and inbox.imap_username)
    if inbox.outgoing_method == OutgoingMethod.ANYMAIL:
        return incoming and bool(inbox.anymail_backend)
    return incoming and bool(inbox.smtp_host)


def policy_notices(inbox: Inbox) -> list[str]:
    """What the organisation's policy means for this inbox, in a sentence each."""
    policy = OrganisationPolicy.current()
    notices = []
    if inbox.allowed_recipient_domains.strip():
        notices.append(f"Replies may go only to {', '.join(inbox.allowed_domains)} (this inbox's own list"
                       + (", instead of the organisation's)." if policy.allowed_domains else ")."))
    elif policy.allowed_domains:
        notices.append(f"Replies may go only to {', '.join(policy.allowed_domains)} (organisation policy).")
    if inbox.max_sends_per_hour is not None:
        notices.append(f"At most {inbox.max_sends_per_hour} replies an hour (this inbox's own limit"
                       + (", instead of the organisation's)." if policy.max_sends_per_hour is not None else ")."))
    elif policy.max_sends_per_hour is not None:
        notices.append(f"At most {policy.max_sends_per_hour} replies an hour (organisation policy).")
    return notices
