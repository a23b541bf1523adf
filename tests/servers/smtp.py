"""A real aiosmtpd SMTP server on loopback for tests (fixtures), and for benchmarks.

`SMTPTestServer` is a plain class (usable from a script): plain, STARTTLS or implicit TLS,
optional AUTH (LOGIN/PLAIN), PIPELINING offered or not, and behaviours that fail on purpose (5xx/4xx to RCPT or DATA,
take the data and never answer, no STARTTLS offered, stop and start again on the same
port). It records every envelope it accepted. Its certificate comes from a throwaway CA
generated once per test session; the transport trusts it through settings.SMTP_CA_FILE.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

from tests.servers.certificates import TestCertificates, make_certificates

PLAIN = "none"
STARTTLS = "starttls"
IMPLICIT_TLS = "ssl"

# aiosmtpd logs every command at INFO; tests and benchmarks only want its problems.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------
# What the server received, and how it misbehaves
# ---------------------------------------------------------------------------
@dataclass
class Received:
    """One envelope the server took the data of."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    auth: str | None
    tls: bool
    answered: bool = True

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class Behaviour:
    """How the server answers. Replies are full SMTP lines, e.g. "550 5.7.1 Go away"."""

    mail_reply: str | None = None  # to every MAIL FROM
    rcpt_reply: str | None = None  # to every RCPT
    refuse: dict[str, str] = field(default_factory=dict)  # per recipient address
    data_reply: str | None = None  # after the final dot, instead of 250
    fail_times: int | None = None  # rcpt_reply/data_reply apply to this many transactions, then 250
    hang_after_data: bool = False  # keep the data, never answer
    delay_before_rcpt: float = 0.0  # seconds, e.g. to kill a worker before the data goes out
    delay_after_received: int = 0  # the delay starts once this many messages were received

    def use_failure(self) -> bool:
        if self.fail_times is None:
            return True
        if self.fail_times <= 0:
            return False
        self.fail_times -= 1
        return True


class _Handler:
    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    async def auth_XOAUTH2(self, smtp: Any, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Google and Microsoft speak it: a refusal is a challenge holding the error,
        which the client answers with an empty line, then 535."""
        import base64

        initial = base64.b64decode(args[1]).decode(errors="replace") if len(args) > 1 else ""
        fields = dict(part.split("=", 1) for part in initial.split("\x01") if "=" in part)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        self.server.auth_attempts.append(f"XOAUTH2:{user}")
        if self.server.access_token is not None and (user, token) == (self.server.username, self.server.access_token):
            return AuthResult(success=True, auth_data=user)
        answer = await smtp.challenge_auth('{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}')
        if answer is MISSING or answer != b"":
            return AuthResult(success=False, handled=False, message="501 5.5.2 Expected an empty answer")
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str],
                          ) -> list[str]:
        # aiosmtpd reads commands off a buffered stream one at a time, so pipelined commands
        # (RFC 2920) work; like Postfix, Exim or Exchange it may say so, which it does not by itself.
        session.host_name = hostname
        if self.server.offer_pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, smtp: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if self.server.behaviour.mail_reply:
            return self.server.behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        behaviour = self.server.behaviour
        if behaviour.delay_before_rcpt and len(self.server.received) >= behaviour.delay_after_received:
            await asyncio.sleep(behaviour.delay_before_rcpt)
        if address.lower() in behaviour.refuse:
            return behaviour.refuse[address.lower()]
        if behaviour.rcpt_reply and behaviour.use_failure():
            return behaviour.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        behaviour = self.server.behaviour
        if behaviour.data_reply and behaviour.use_failure():
            return behaviour.data_reply
        received = Received(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=bytes(envelope.content),
            auth=session.auth_data if session.authenticated else None,
            tls=bool(session.ssl) or self.server.security == IMPLICIT_TLS,
            answered=not behaviour.hang_after_data,
        )
        self.server.record(received)
        if behaviour.hang_after_data:
            await asyncio.sleep(3600)
        return f"250 2.0.0 Ok: queued as {len(self.server.received)}"


class SMTPTestServer:
    """An aiosmtpd server in a thread of its own, on a fixed loopback port across restarts."""

    def __init__(self, *, security: str = PLAIN, certificates: TestCertificates | None = None,
                 username: str | None = None, password: str | None = None, offer_starttls: bool = True,
                 offer_pipelining: bool = True, port: int | None = None, behaviour: Behaviour | None = None,
                 access_token: str | None = None) -> None:
        if security != PLAIN and certificates is None:
            raise ValueError("TLS modes need certificates")
        self.security = security
        self.certificates = certificates
        self.username = username
        self.password = password
        self.offer_starttls = offer_starttls
        self.offer_pipelining = offer_pipelining
        self.access_token = access_token  # XOAUTH2 takes it, for `username`
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.behaviour = behaviour or Behaviour()
        self.received: list[Received] = []
        self.auth_attempts: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> SMTPTestServer:
        if self._controller is not None:
            return self
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "ready_timeout": 10,
                                  "enable_SMTPUTF8": True}
        if self.security == IMPLICIT_TLS:
            kwargs["ssl_context"] = self.certificates.server_context()
        elif self.security == STARTTLS and self.offer_starttls:
            kwargs["tls_context"] = self.certificates.server_context()
            kwargs["require_starttls"] = True
        if self.username is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # Over STARTTLS the server refuses AUTH before the upgrade, as real ones do.
            kwargs["auth_require_tls"] = self.security == STARTTLS and self.offer_starttls
        # A new controller (and event loop) per start: a stopped one cannot be restarted.
        deadline = time.monotonic() + 10
        while True:
            try:
                with warnings.catch_warnings():
                    # aiosmtpd warns about AUTH without TLS: the plaintext variant exists on purpose.
                    warnings.simplefilter("ignore", UserWarning)
                    controller = Controller(_Handler(self), **kwargs)
                controller.start()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # the old listener's port may take a moment to come free
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    # --- AUTH and recording --------------------------------------------------------
    def _authenticate(self, smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode()
        with self._lock:
            self.auth_attempts.append(f"{mechanism}:{login}")
        ok = login == self.username and data.password.decode() == self.password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Poll until at least `count` envelopes arrived; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages at the SMTP server, got {len(self.received)}")
            time.sleep(0.05)
        return list(self.received)

    def inbox_settings(self) -> dict[str, Any]:
        """Fields for an Inbox that sends through this server."""
        return {
            "smtp_host": self.host, "smtp_port": self.port,
            "smtp_security": STARTTLS if self.security == STARTTLS else self.security,
            "smtp_username": self.username or "", "smtp_secret": self.password or "",
            "smtp_verify_cert": True,
        }


# ---------------------------------------------------------------------------
# pytest fixtures
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smtp_certificates(tmp_path_factory) -> Iterator[TestCertificates]:
    """The session's test CA, trusted by our SMTP transport (SMTP_CA_FILE), also in worker processes."""
    from django.test import override_settings

    certificates = make_certificates(tmp_path_factory.mktemp("smtp-tls"), "SMTP")
    previous = os.environ.get("SMTP_CA_FILE")
    os.environ["SMTP_CA_FILE"] = str(certificates.ca_file)  # inherited by real Celery workers
    override = override_settings(SMTP_CA_FILE=str(certificates.ca_file))
    override.enable()
    yield certificates
    override.disable()
    if previous is None:
        os.environ.pop("SMTP_CA_FILE", None)
    else:
        os.environ["SMTP_CA_FILE"] = previous


@pytest.fixture
def smtp_server_factory(smtp_certificates) -> Iterator[Callable[..., SMTPTestServer]]:
    """Start servers: `smtp_server_factory(security="starttls", username="u", password="p")`."""
    started: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(certificates=smtp_certificates, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory) -> SMTPTestServer:
    """A plain server without AUTH that accepts everything."""
    return smtp_server_factory()
