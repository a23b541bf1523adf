"""Inbox: one team mailbox, how to read it (IMAP), how to send from it (SMTP or an email service)."""

from __future__ import annotations

import datetime as dt
import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from config.encryption import EncryptedTextField
from departments.models import Department
from inboxes.history import InboxChange  # noqa: F401 (registers the model with the app)
from inboxes.policy import OrganisationPolicy, parse_domains


class Security(models.TextChoices):
    IMPLICIT_TLS = "ssl", "Implicit TLS"
    STARTTLS = "starttls", "STARTTLS (required)"
    NONE = "none", "None (plaintext; loopback or trusted networks only)"


class AfterImport(models.TextChoices):
    LEAVE = "leave", "Leave as it is"
    MARK_READ = "mark_read", "Mark read"
    MOVE = "move", "Move to folder"


class AuthMethod(models.TextChoices):
    PASSWORD = "password", "Password or app password"
    MICROSOFT = "microsoft", "Microsoft OAuth"
    GOOGLE = "google", "Google OAuth"


class OutgoingMethod(models.TextChoices):
    SMTP = "smtp", "SMTP server"
    ANYMAIL = "anymail", "Email service (django-anymail)"


class ConnectionStatus(models.TextChoices):
    NOT_CONNECTED = "not_connected", "Not connected"
    CONFIGURED = "configured", "Configured"
    AWAITING_AUTHORIZATION = "awaiting_authorization", "Awaiting authorization"
    CONNECTED = "connected", "Connected"
    THROTTLED = "throttled", "Throttled (the server asked us to slow down)"
    ERROR = "error", "Error"


class OutgoingStatus(models.TextChoices):
    """The sending side's state, apart from the incoming side's connection_status."""

    OK = "ok", "OK"
    ERROR = "error", "Error (the server refused the login; replies wait)"


# Changing any of these may fix a refused SMTP login.
OUTGOING_CONNECTION_FIELDS = (
    "auth_method", "outgoing_method", "smtp_host", "smtp_port", "smtp_security", "smtp_verify_cert",
    "smtp_username", "smtp_secret", "anymail_backend", "oauth_access_token",
)


# Changing any of these may fix a failing poll (a new password, the right port).
INCOMING_CONNECTION_FIELDS = (
    "auth_method", "imap_host", "imap_port", "imap_security", "imap_verify_cert", "imap_username",
    "imap_secret", "imap_folder",
)


class HistoryImport(models.TextChoices):
    NONE = "none", "Not requested"
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Inbox(models.Model):
    # --- identity -------------------------------------------------------------------
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    address = models.EmailField(unique=True, help_text="The mailbox's email address.")
    display_name = models.CharField(max_length=120, help_text="How the inbox is named in Switchboard.")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="inboxes")
    active = models.BooleanField(default=True, help_text="Inactive inboxes are neither polled nor sent from.")
    description = models.TextField(blank=True)
    sender_name = models.CharField(
        max_length=120, blank=True, help_text="Display name on replies when the agent's own is not used."
    )
    use_agent_name = models.BooleanField(
        default=True, help_text="Show the replying agent's name, e.g. “Ada at Support”."
    )
    signature = models.TextField(blank=True, help_text="Appended to every reply (plain text).")
    reply_to = models.EmailField(blank=True, help_text="Optional Reply-To address on replies.")
    auth_method = models.CharField(max_length=20, choices=AuthMethod.choices, default=AuthMethod.PASSWORD)

    # --- incoming: IMAP ---------------------------------------------------------------
    imap_host = models.CharField("IMAP host", max_length=255, blank=True)
    imap_port = models.PositiveIntegerField("IMAP port", default=993)
    imap_security = models.CharField(
        "IMAP security", max_length=10, choices=Security.choices, default=Security.IMPLICIT_TLS
    )
    imap_verify_cert = models.BooleanField("verify IMAP certificate", default=True)
    imap_trusted_certificate = models.TextField(
        "trusted IMAP certificate", blank=True,
        help_text="A server certificate (PEM) trusted for this inbox besides the usual ones; set by Test connection.")
    imap_username = models.CharField("IMAP username", max_length=255, blank=True)
    imap_secret = EncryptedTextField("IMAP password", blank=True)
    imap_folder = models.CharField("IMAP folder", max_length=255, default="INBOX")
    poll_interval = models.PositiveIntegerField(default=60, help_text="Seconds between polls.")
    after_import = models.CharField(max_length=10, choices=AfterImport.choices, default=AfterImport.LEAVE)
    after_import_folder = models.CharField(max_length=255, blank=True)
    max_message_bytes = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Larger messages are recorded with their headers only. Empty: site default."
    )
    import_since = models.DateTimeField(
        default=timezone.now, help_text="The first poll imports mail that arrived from this moment on."
    )
    history_cutoff = models.DateField(
        null=True, blank=True, help_text="Import older mail back to this date, in archive mode (not routed)."
    )
    history_status = models.CharField(max_length=10, choices=HistoryImport.choices, default=HistoryImport.NONE)
    history_total = models.PositiveIntegerField(default=0)
    history_done = models.PositiveIntegerField(default=0)

    # --- outgoing: SMTP or an email service ---------------------------------------------
    outgoing_method = models.CharField(max_length=10, choices=OutgoingMethod.choices, default=OutgoingMethod.SMTP)
    smtp_host = models.CharField("SMTP host", max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField("SMTP port", default=465)
    smtp_security = models.CharField(
        "SMTP security", max_length=10, choices=Security.choices, default=Security.IMPLICIT_TLS
    )
    smtp_verify_cert = models.BooleanField("verify SMTP certificate", default=True)
    smtp_trusted_certificate = models.TextField(
        "trusted SMTP certificate", blank=True,
        help_text="A server certificate (PEM) trusted for this inbox besides the usual ones; set by Test connection.")
    smtp_username = models.CharField("SMTP username", max_length=255, blank=True)
    smtp_secret = EncryptedTextField("SMTP password", blank=True)
    anymail_backend = models.CharField(
        max_length=255, blank=True, help_text="e.g. anymail.backends.postmark.EmailBackend"
    )
    save_to_sent = models.BooleanField(default=False, help_text="Also store each reply in the Sent folder.")
    sent_folder = models.CharField(max_length=255, default="Sent")
    auto_acknowledge = models.BooleanField(default=False, help_text="Acknowledge each new conversation.")
    allowed_recipient_domains = models.TextField(
        blank=True, help_text="Optional: one domain per line; replies to other domains are refused."
    )
    max_sends_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="Optional: more replies wait in the queue; none is dropped."
    )

    # --- OAuth (Microsoft via msal, Google) -------------------------------------------
    oauth_client_id = models.CharField(max_length=255, blank=True)
    oauth_client_secret = EncryptedTextField(blank=True)
    oauth_tenant = models.CharField(max_length=255, blank=True)
    oauth_refresh_token = EncryptedTextField(blank=True)
    oauth_access_token = EncryptedTextField(blank=True)
    oauth_access_token_expires_at = models.DateTimeField(null=True, blank=True)

    # --- status and sync state --------------------------------------------------------
    connection_status = models.CharField(
        max_length=30, choices=ConnectionStatus.choices, default=ConnectionStatus.NOT_CONNECTED
    )
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    last_poll_at = models.DateTimeField(null=True, blank=True, help_text="Last poll attempt.")
    last_successful_poll_at = models.DateTimeField(null=True, blank=True)
    backlog = models.PositiveIntegerField(default=0, help_text="Messages on the server not yet imported.")
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(
        null=True, blank=True, help_text="When set, the next poll waits for it (backoff after errors).")
    last_notice = models.TextField(blank=True, help_text="Something the server did worth knowing; not an error.")
    uidvalidity_changed_at = models.DateTimeField(
        "UIDVALIDITY changed at", null=True, blank=True, help_text="When the server last renumbered the folder.")

    # --- outgoing status (sending), apart from the incoming status above ------------------
    outgoing_status = models.CharField(max_length=10, choices=OutgoingStatus.choices, default=OutgoingStatus.OK)
    outgoing_last_error = models.TextField(blank=True)
    outgoing_last_error_at = models.DateTimeField(null=True, blank=True)
    outgoing_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="While the login is refused, replies wait for this time to try again.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "inboxes"
        ordering = ["address"]

    def __str__(self) -> str:
        return f"{self.display_name} <{self.address}>"

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        if self.pk and self._incoming_settings_changed(update_fields):
            # A manager fixed something: the old backoff is about the old settings. Poll soon.
            self.consecutive_failures, self.next_poll_at = 0, timezone.now()
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "consecutive_failures", "next_poll_at"}
        if self.pk and self.outgoing_retry_at and self._changed(OUTGOING_CONNECTION_FIELDS, update_fields):
            # The login was refused; new settings are tried at once (the sweeper lets the replies go).
            self.outgoing_retry_at = timezone.now()
            if update_fields is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "outgoing_retry_at"}
        super().save(*args, **kwargs)

    def _changed(self, fields: tuple[str, ...], update_fields) -> bool:
        names = [name for name in fields if update_fields is None or name in update_fields]
        stored = Inbox.objects.filter(pk=self.pk).values(*names).first() if names else None
        return stored is not None and any(stored[name] != getattr(self, name) for name in names)

    def _incoming_settings_changed(self, update_fields) -> bool:
        names = [name for name in INCOMING_CONNECTION_FIELDS if update_fields is None or name in update_fields]
        stored = Inbox.objects.filter(pk=self.pk).values(*names).first() if names else None
        return stored is not None and any(stored[name] != getattr(self, name) for name in names)

    def clean(self) -> None:
        errors = {}
        if self.after_import == AfterImport.MOVE and not self.after_import_folder:
            errors["after_import_folder"] = "Name the folder imported mail is moved to."
        if self.outgoing_method == OutgoingMethod.ANYMAIL and not self.anymail_backend:
            errors["anymail_backend"] = "Name the django-anymail backend to send through."
        if errors:
            raise ValidationError(errors)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @property
    def allowed_domains(self) -> list[str]:
        """The inbox's own allowed recipient domains, or else the organisation's."""
        own = parse_domains(self.allowed_recipient_domains)
        return own or OrganisationPolicy.current().allowed_domains

    @property
    def sends_per_hour_cap(self) -> int | None:
        """The inbox's own limit of replies per hour, or else the organisation's."""
        if self.max_sends_per_hour is not None:
            return self.max_sends_per_hour
        return OrganisationPolicy.current().max_sends_per_hour

    def mark_connected(self) -> None:
        now = timezone.now()
        Inbox.objects.filter(pk=self.pk).update(
            connection_status=ConnectionStatus.CONNECTED, last_error="", last_error_at=None,
            consecutive_failures=0, next_poll_at=None, last_successful_poll_at=now, last_poll_at=now,
        )

    def mark_outgoing_error(self, message: str, retry_at: dt.datetime) -> None:
        """The server refused the login: shown on the inbox; replies wait for `retry_at`."""
        self.outgoing_status, self.outgoing_last_error = OutgoingStatus.ERROR, message
        self.outgoing_last_error_at, self.outgoing_retry_at = timezone.now(), retry_at
        Inbox.objects.filter(pk=self.pk).update(
            outgoing_status=self.outgoing_status, outgoing_last_error=message,
            outgoing_last_error_at=self.outgoing_last_error_at, outgoing_retry_at=retry_at)

    def mark_outgoing_ok(self) -> None:
        """A message went out: the login works again."""
        self.outgoing_status, self.outgoing_last_error = OutgoingStatus.OK, ""
        self.outgoing_last_error_at = self.outgoing_retry_at = None
        Inbox.objects.filter(pk=self.pk).update(outgoing_status=OutgoingStatus.OK, outgoing_last_error="",
                                                outgoing_last_error_at=None, outgoing_retry_at=None)
