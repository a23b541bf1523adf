"""The inbox form of the admin: provider presets, "same as incoming" for SMTP, secrets write-only."""

from __future__ import annotations

import json

from django import forms

from config.admin_forms import SecretFieldsForm
from inboxes.models import Inbox
from inboxes.presets import CUSTOM, PRESETS, preset_for_host

HIDDEN = ["oauth_refresh_token", "oauth_access_token", "oauth_access_token_expires_at",
          "imap_trusted_certificate", "smtp_trusted_certificate"]
FORM_ONLY = ("preset", "smtp_same_as_incoming")


class InboxForm(SecretFieldsForm):
    secret_fields = ("imap_secret", "smtp_secret", "oauth_client_secret")

    preset = forms.ChoiceField(
        choices=[(preset.key, preset.label) for preset in PRESETS], required=False, initial=CUSTOM.key,
        label="Provider", help_text="Fills in the hosts, ports and security below; you can still change them.",
        widget=forms.Select(attrs={"data-presets": json.dumps([preset.as_dict() for preset in PRESETS])}),
    )
    smtp_same_as_incoming = forms.BooleanField(
        required=False, initial=True, label="SMTP sign-in same as incoming",
        help_text="Use the IMAP username and password for sending too (most providers want that).")

    class Meta:
        model = Inbox
        exclude = HIDDEN

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inbox = self.instance
        if inbox.pk:
            self.initial["preset"] = preset_for_host(inbox.imap_host).key
            self.initial["smtp_same_as_incoming"] = (
                inbox.smtp_username == inbox.imap_username and inbox.smtp_secret == inbox.imap_secret)
        if "imap_secret" in self.fields:
            self.fields["imap_secret"].help_text += (
                " With two-factor sign-in on, most providers (Google, Microsoft 365, Yahoo, Zoho, Fastmail) need an "
                "app password here, not the account's usual one: picking the provider above says where to get it.")
        for name in ("smtp_username", "smtp_secret"):
            if name in self.fields:
                self.fields[name].help_text = ("Only when “same as incoming” is off. " +
                                               (self.fields[name].help_text or "")).strip()

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.cleaned_data.get("smtp_same_as_incoming"):
            # After construct_instance: the IMAP secret is the new one, or the stored one kept.
            self.instance.smtp_username = self.instance.imap_username
            self.instance.smtp_secret = self.instance.imap_secret

    def changed_settings(self) -> list[str]:
        """The model fields this form changed (names only: a secret's value is never listed)."""
        names = [name for name in self.changed_data if name not in FORM_ONLY]
        if self.cleaned_data.get("smtp_same_as_incoming"):
            for source, target in (("imap_username", "smtp_username"), ("imap_secret", "smtp_secret")):
                if source in names and target not in names:
                    names.append(target)
        return names
