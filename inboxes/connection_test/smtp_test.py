"""The outgoing half of the connection test: SMTP, step by step, as a reply would leave."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator

from django.conf import settings

from inboxes import tls
from inboxes.connection_test.steps import (
    Recorder,
    Step,
    StepFailed,
    certificate_detail,
    connect,
    handshake,
    resolve,
    server_words,
)
from inboxes.models import Inbox, OutgoingMethod, Security
from inboxes.presets import preset_for_host

# A plain SMTP server greets at once; silence this long means the port expects a TLS handshake.
GREETING_SECONDS = 5.0


class _Client(smtplib.SMTP):
    """smtplib over a socket we opened (and secured) ourselves, so each step is timed on its own."""

    def __init__(self, sock: socket.socket) -> None:
        self._given = sock
        super().__init__(timeout=sock.gettimeout() or 30)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._given


def smtp_steps(inbox: Inbox) -> Iterator[tuple[Step, smtplib.SMTP | None]]:
    """Each step of connecting to the inbox's SMTP server, with the client once logged in; stops at a failure."""
    record = Recorder("SMTP")
    if inbox.outgoing_method != OutgoingMethod.SMTP:
        with record.step("email service") as step:
            step.detail = (f"Replies leave through the email service {inbox.anymail_backend or '(none set)'}; "
                           "its settings are checked when the first reply is sent.")
        yield record.steps[-1], None
        return
    timeout = float(settings.SMTP_TIMEOUT)
    host, port = inbox.smtp_host, inbox.smtp_port
    with record.step("DNS") as step:
        step.detail = f"{host} is at {', '.join(resolve(host, port))}."
    yield record.steps[-1], None
    if record.failed:
        return
    with record.step("connect") as step:
        sock = connect(host, port, timeout)
        step.detail = f"Connected to {host} port {port}."
    yield record.steps[-1], None
    if record.failed:
        return
    client = None
    for step, client in _secure(record, inbox, sock, tls.smtp_context(inbox), timeout):
        yield step, None
        if not step.ok:
            _quit(client)
            return
    for run in (_size, _mechanisms, _login):
        with record.step(run.__doc__ or run.__name__) as step:
            run(client, inbox, step)
        yield record.steps[-1], (client if not record.failed and run is _login else None)
        if record.failed:
            _quit(client)
            return


def _secure(record: Recorder, inbox: Inbox, sock: socket.socket, context: ssl.SSLContext,
            timeout: float) -> Iterator[tuple[Step, smtplib.SMTP | None]]:
    host = inbox.smtp_host
    client = None
    if inbox.smtp_security == Security.IMPLICIT_TLS:
        with record.step("TLS and certificate") as step:
            sock = handshake(sock, host, context, timeout)
            step.detail, step.data = certificate_detail(sock, host)
        yield record.steps[-1], None
        if record.failed:
            return
    with record.step("EHLO") as step:
        client = _greet(sock, inbox)
        step.detail = f"The server offers {', '.join(sorted(client.esmtp_features)) or 'no extensions'}."
    yield record.steps[-1], client
    if record.failed or inbox.smtp_security != Security.STARTTLS:
        return
    with record.step("STARTTLS offered") as step:
        if not client.has_extn("starttls"):
            raise StepFailed(
                f"{host} port {inbox.smtp_port} does not offer STARTTLS, so Switchboard will not log in or send "
                "there (it never sends a password or mail unencrypted).",
                "Choose implicit TLS (usually port 465), or the STARTTLS port (usually 587).")
        step.detail = "The server offers STARTTLS."
    yield record.steps[-1], client
    if record.failed:
        return
    with record.step("TLS and certificate") as step:
        code, words = client.docmd("STARTTLS")
        if code != 220:
            raise StepFailed(f"The server refused STARTTLS ({code} {server_words(words)}).",
                             "Choose implicit TLS (usually port 465).")
        secured = handshake(client.sock, host, context, timeout, starttls="smtp")
        client.sock, client.file = secured, None
        client.helo_resp = client.ehlo_resp = None
        client.esmtp_features, client.does_esmtp = {}, False
        client.ehlo()
        step.detail, step.data = certificate_detail(secured, host)
    yield record.steps[-1], client


def _greet(sock: socket.socket, inbox: Inbox) -> smtplib.SMTP:
    sock.settimeout(min(GREETING_SECONDS, float(settings.SMTP_TIMEOUT)))
    client = _Client(sock)
    where = f"{inbox.smtp_host} port {inbox.smtp_port}"
    try:
        code, words = client.connect(inbox.smtp_host, inbox.smtp_port)
        if code != 220:
            raise StepFailed(f"{where} refused the session ({code} {server_words(words)}).",
                             "Check the host and port; the server may not accept mail from this address.")
        sock.settimeout(float(settings.SMTP_TIMEOUT))
        code, words = client.ehlo()
    except (TimeoutError, smtplib.SMTPServerDisconnected) as error:
        raise StepFailed(f"{where} sent no SMTP greeting.",
                         "This port probably expects implicit TLS: choose Implicit TLS (port 465), or use the "
                         "STARTTLS port 587.") from error
    except OSError as error:
        raise StepFailed(f"{where} did not answer as an SMTP server ({error}).",
                         "Check the port: SMTP is 465 with implicit TLS or 587 with STARTTLS.") from error
    if code != 250:
        raise StepFailed(f"The server refused EHLO ({code} {server_words(words)}).", "Check the host and port.")
    return client


def _size(client: smtplib.SMTP, inbox: Inbox, step: Step) -> None:
    """SIZE limit"""
    size = client.esmtp_features.get("size", "").strip()
    limit = int(size) if size.isdigit() else 0
    step.data["size_limit"] = limit or None
    step.detail = (f"Messages up to {limit / 1024 / 1024:.1f} MB are accepted." if limit else
                   "The server announces no size limit.")


def _mechanisms(client: smtplib.SMTP, inbox: Inbox, step: Step) -> None:
    """sign-in mechanisms"""
    mechanisms = client.esmtp_features.get("auth", "").split()
    step.data["mechanisms"] = mechanisms
    if inbox.smtp_username and not mechanisms:
        raise StepFailed("The server offers no sign-in (AUTH) on this connection.",
                         "Check the port and security: most servers offer sign-in only on 587 with STARTTLS or "
                         "465 with implicit TLS, not on port 25.")
    step.detail = f"Sign-in mechanisms: {' '.join(mechanisms) or 'none (no sign-in needed)'}."


def _login(client: smtplib.SMTP, inbox: Inbox, step: Step) -> None:
    """login"""
    if not inbox.smtp_username:
        step.detail = "No SMTP username: sending without signing in."
        return
    try:
        client.login(inbox.smtp_username, inbox.smtp_secret or "")
    except smtplib.SMTPAuthenticationError as error:
        preset = preset_for_host(inbox.smtp_host)
        advice = "Check the SMTP username and password (blank uses the incoming ones)."
        advice += " " + (preset.password_hint or "If two-factor sign-in is on, the provider probably needs an app "
                         "password.")
        raise StepFailed(f"The server refused the login for {inbox.smtp_username} "
                         f"({error.smtp_code} {server_words(error.smtp_error)}).", advice) from error
    except smtplib.SMTPException as error:
        raise StepFailed(f"Signing in failed ({server_words(error)}).",
                         "Check the SMTP username and password.") from error
    step.detail = f"Logged in as {inbox.smtp_username}."


def _quit(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
