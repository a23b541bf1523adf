"""The incoming half of the connection test: IMAP, step by step, as the poll would connect."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

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
from inboxes.models import AuthMethod, Inbox, Security
from inboxes.presets import preset_for_host

# A plain IMAP server greets at once; silence this long means the port expects a TLS handshake.
GREETING_SECONDS = 5.0
_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$')
_STATUS = re.compile(rb"MESSAGES (\d+).*UNSEEN (\d+)|UNSEEN (\d+).*MESSAGES (\d+)")


class _Client(imaplib.IMAP4):
    """imaplib over a socket we opened (and secured) ourselves, so each step is timed on its own."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self._given = sock
        super().__init__(host, 0, timeout=sock.gettimeout())

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._given


def imap_steps(inbox: Inbox) -> Iterator[Step]:
    """Each step of connecting to the inbox's IMAP server, yielded as soon as it is done; stops at a failure."""
    record = Recorder("IMAP")
    timeout = float(settings.IMAP_TIMEOUT)
    host, port = inbox.imap_host, inbox.imap_port
    context = tls.imap_context(inbox)
    with record.step("DNS") as step:
        step.detail = f"{host} is at {', '.join(resolve(host, port))}."
    yield record.steps[-1]
    if record.failed:
        return
    with record.step("connect") as step:
        sock = connect(host, port, timeout)
        step.detail = f"Connected to {host} port {port}."
    yield record.steps[-1]
    if record.failed:
        return
    connection = _Connection(sock)
    try:
        for step in _secure_and_greet(record, inbox, connection, context, timeout):
            yield step
            if not step.ok:
                return
        yield from _after_greeting(record, inbox, connection.client)
    finally:
        connection.close()


@dataclass
class _Connection:
    """The socket as it is secured, and the client once the server greeted: closed in the end, whatever happened."""

    sock: socket.socket
    client: imaplib.IMAP4 | None = None

    def close(self) -> None:
        try:
            if self.client is not None:
                self.client.logout()
            else:
                self.sock.close()
        except (OSError, imaplib.IMAP4.error):
            pass


def _secure_and_greet(record: Recorder, inbox: Inbox, connection: _Connection, context: ssl.SSLContext,
                      timeout: float) -> Iterator[Step]:
    host, security = inbox.imap_host, inbox.imap_security
    if security == Security.IMPLICIT_TLS:
        with record.step("TLS and certificate") as step:
            connection.sock = handshake(connection.sock, host, context, timeout)
            step.detail, step.data = certificate_detail(connection.sock, host)
        yield record.steps[-1]
        if record.failed:
            return
    with record.step("greeting and capabilities") as step:
        client = connection.client = _greet(connection.sock, host, inbox)
        step.detail = f"The server offers {_capability_text(client)}."
    yield record.steps[-1]
    if record.failed or security != Security.STARTTLS:
        return
    with record.step("STARTTLS offered") as step:
        if "STARTTLS" not in client.capabilities:
            raise StepFailed(
                f"{host} port {inbox.imap_port} does not offer STARTTLS, so Switchboard will not log in there "
                "(it never sends a password unencrypted).",
                "Choose implicit TLS, usually on port 993; or ask the administrator to enable STARTTLS.")
        step.detail = "The server offers STARTTLS."
    yield record.steps[-1]
    if record.failed:
        return
    with record.step("TLS and certificate") as step:
        typ, data = client._simple_command("STARTTLS")
        if typ != "OK":
            raise StepFailed(f"The server refused STARTTLS ({server_words(data)}).", "Choose implicit TLS (993).")
        secured = handshake(client.sock, host, context, timeout, starttls="imap")
        client.sock, client.file = secured, secured.makefile("rb")
        client._tls_established = True
        client._get_capabilities()
        step.detail, step.data = certificate_detail(secured, host)
    yield record.steps[-1]


def _greet(sock: socket.socket, host: str, inbox: Inbox) -> _Client:
    sock.settimeout(min(GREETING_SECONDS, float(settings.IMAP_TIMEOUT)))
    try:
        client = _Client(sock, host)
    except TimeoutError as error:
        raise StepFailed(
            f"{host} port {inbox.imap_port} sent no IMAP greeting.",
            "This port probably expects implicit TLS: choose Implicit TLS (port 993), or the STARTTLS port 143.",
        ) from error
    except (imaplib.IMAP4.error, OSError) as error:
        raise StepFailed(f"{host} port {inbox.imap_port} did not answer as an IMAP server ({server_words(error)}).",
                         "Check the port: IMAP is 993 with implicit TLS or 143 with STARTTLS.") from error
    sock.settimeout(float(settings.IMAP_TIMEOUT))
    return client


def _capability_text(client: imaplib.IMAP4) -> str:
    capabilities = [name for name in client.capabilities if not name.startswith("AUTH=")]
    mechanisms = [name[5:] for name in client.capabilities if name.startswith("AUTH=")]
    text = " ".join(capabilities)
    return f"{text}; sign-in mechanisms: {' '.join(mechanisms) or 'LOGIN only'}"


def _after_greeting(record: Recorder, inbox: Inbox, client: imaplib.IMAP4) -> Iterator[Step]:
    for run in (_login, _folder, _idle, _counts, _address):
        with record.step(run.__doc__ or run.__name__) as step:
            run(client, inbox, step)
        yield record.steps[-1]
        if record.failed:
            return


def _login(client: imaplib.IMAP4, inbox: Inbox, step: Step) -> None:
    """login"""
    if inbox.auth_method != AuthMethod.PASSWORD:
        raise StepFailed(f"Signing in with {inbox.get_auth_method_display()} is not tested here yet.",
                         "Use a password or an app password for this inbox for now.")
    if "LOGINDISABLED" in client.capabilities:
        raise StepFailed("The server does not allow logging in on this connection (LOGINDISABLED).",
                         "Choose STARTTLS or implicit TLS.")
    password = inbox.imap_secret or ""
    try:
        if (inbox.imap_username + password).isascii():
            client.login(inbox.imap_username, password)
        else:
            client.authenticate("PLAIN", lambda _: f"\0{inbox.imap_username}\0{password}".encode())
    except imaplib.IMAP4.error as error:
        raise _login_refused(inbox, server_words(error.args[0] if error.args else error)) from error
    step.detail = f"Logged in as {inbox.imap_username}."


def _login_refused(inbox: Inbox, words: str) -> StepFailed:
    preset = preset_for_host(inbox.imap_host)
    if re.search(r"imap.{0,40}(disabled|not enabled|not allowed)|(disabled|enable).{0,20}imap", words, re.I):
        return StepFailed(f"The account may not have IMAP switched on ({words}).",
                          preset.imap_hint or "Ask the mail administrator to enable IMAP for this account.")
    advice = "Check the username and password."
    if preset.password_hint:
        advice += " " + preset.password_hint
    else:
        advice += " If two-factor sign-in is on, the provider probably needs an app password."
    return StepFailed(f"The server refused the login for {inbox.imap_username} ({words}).", advice)


def _folder(client: imaplib.IMAP4, inbox: Inbox, step: Step) -> None:
    """folder"""
    typ, _ = client.select(_quote(inbox.imap_folder), readonly=True)
    folders = _folders(client)
    step.data["folders"] = folders
    if typ != "OK":
        raise StepFailed(f"The folder “{inbox.imap_folder}” does not exist or cannot be opened.",
                         f"Pick one of this account's folders: {', '.join(folders) or '(none listed)'}. "
                         "Folder names are case-sensitive on most servers.", folders=folders)
    step.detail = f"Opened “{inbox.imap_folder}” (read-only)."


def _idle(client: imaplib.IMAP4, inbox: Inbox, step: Step) -> None:
    """IDLE support"""
    step.data["idle"] = "IDLE" in client.capabilities
    step.detail = ("The server supports IDLE: new mail can be seen at once." if step.data["idle"] else
                   f"The server does not support IDLE: Switchboard checks every {inbox.poll_interval} seconds.")


def _counts(client: imaplib.IMAP4, inbox: Inbox, step: Step) -> None:
    """messages"""
    typ, data = client.status(_quote(inbox.imap_folder), "(MESSAGES UNSEEN)")
    match = _STATUS.search(data[0] or b"") if typ == "OK" and data else None
    if match is None:
        raise StepFailed(f"The server did not say how many messages there are ({server_words(data)}).",
                         "The account can still be read; tell your mail administrator if polls fail.")
    total, unread = (match[1], match[2]) if match[1] else (match[4], match[3])
    step.data.update(total=int(total), unread=int(unread))
    step.detail = f"{int(total)} messages, {int(unread)} unread, in “{inbox.imap_folder}”."


def _address(client: imaplib.IMAP4, inbox: Inbox, step: Step) -> None:
    """address"""
    step.data["address"] = inbox.address
    if inbox.imap_username.strip().lower() == inbox.address.lower():
        step.detail = f"Signed in as {inbox.address}, the inbox's address."
        return
    step.detail = (f"Signed in as {inbox.imap_username}, which is not the inbox's address {inbox.address}: "
                   "make sure mail for it reaches this account (an alias or shared mailbox). Sending a test "
                   "message shows it.")


def _folders(client: imaplib.IMAP4) -> list[str]:
    typ, data = client.list()
    names = []
    for line in data if typ == "OK" else []:
        match = _LIST_LINE.search(line if isinstance(line, bytes) else b"")
        if match and b"\\noselect" not in match["flags"].lower():
            names.append(match["name"].decode(errors="replace").strip('"'))
    return sorted(names)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
