"""Provider presets: the hosts, ports and security of well-known mail providers, and their sign-in quirks.

The inbox form fills these in the browser (they stay editable); the connection test uses the
hints to say what to do when a login is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# ruff: noqa: S106 (the hints say where app passwords come from; none is a password)


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "ssl"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    # Said when the login is refused: where the app password comes from, with two-factor sign-in on.
    password_hint: str = ""
    # Said when the account may not have IMAP switched on.
    imap_hint: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PRESETS: tuple[Preset, ...] = (
    Preset(
        "microsoft", "Microsoft 365 / Outlook", "outlook.office365.com", 993, "ssl", "smtp.office365.com", 587,
        "starttls",
        password_hint="Microsoft 365 accounts with multi-factor sign-in need an app password (My Account → "
        "Security info → App password), or Microsoft OAuth as the sign-in method; many organisations switch "
        "basic sign-in off altogether, then only OAuth works.",
        imap_hint="An administrator must allow IMAP and authenticated SMTP for the mailbox (Microsoft 365 admin "
        "center → Users → Mail → Manage email apps).",
    ),
    Preset(
        "google", "Google Workspace / Gmail", "imap.gmail.com", 993, "ssl", "smtp.gmail.com", 587, "starttls",
        password_hint="With 2-Step Verification on, Google needs an app password: myaccount.google.com → "
        "Security → App passwords. The account's usual password does not work here.",
        imap_hint="IMAP must be enabled in Gmail (Settings → See all settings → Forwarding and POP/IMAP), and "
        "for Google Workspace also allowed by the administrator.",
    ),
    Preset(
        "yahoo", "Yahoo Mail", "imap.mail.yahoo.com", 993, "ssl", "smtp.mail.yahoo.com", 465, "ssl",
        password_hint="Yahoo needs an app password for mail programs: Account info → Account security → "
        "Generate app password.",
        imap_hint="Yahoo allows IMAP only with an app password.",
    ),
    Preset(
        "zoho", "Zoho Mail", "imap.zoho.com", 993, "ssl", "smtp.zoho.com", 587, "starttls",
        password_hint="With two-factor authentication on, Zoho needs an application-specific password: "
        "accounts.zoho.com → Security → App passwords.",
        imap_hint="IMAP access must be enabled in Zoho Mail (Settings → Mail Accounts → IMAP access).",
    ),
    Preset(
        "fastmail", "Fastmail", "imap.fastmail.com", 993, "ssl", "smtp.fastmail.com", 587, "starttls",
        password_hint="Fastmail needs an app password for mail programs: Settings → Privacy & Security → "
        "Integrations → App passwords.",
    ),
    Preset("custom", "Custom"),
)

CUSTOM = PRESETS[-1]


def preset_for_host(host: str) -> Preset:
    """The preset whose IMAP or SMTP host this is (for its hints), or Custom."""
    host = host.strip().lower().rstrip(".")
    return next((preset for preset in PRESETS if host and host in (preset.imap_host, preset.smtp_host)), CUSTOM)
