"""Inboxes wired to the real Dovecot and a real SMTP server that delivers into it, for the setup tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading

import pytest

from inboxes.models import Security
from inboxes.policy import forget_cached_policy
from tests import factories
from tests.servers.certificates import make_certificates
from tests.servers.dovecot import MailAccount
from tests.servers.smtp import STARTTLS, Received, SMTPTestServer

SMTP_USER, SMTP_PASSWORD = "relay-user", "relay-Secret-7"


class DeliveringSMTPServer(SMTPTestServer):
    """The test SMTP server, delivering what it takes into a Dovecot mailbox, as a real MTA would."""

    def __init__(self, *, account: MailAccount, **options) -> None:
        super().__init__(**options)
        self.account = account

    def record(self, received: Received) -> None:
        super().record(received)
        if self.account.username in received.rcpt_tos:
            self.account.append([received.data])


@pytest.fixture(autouse=True)
def trust_test_ca(dovecot, settings):
    """The site trusts the test Dovecot's CA (MAIL_CA_FILE); the SMTP CA is the session's SMTP_CA_FILE."""
    settings.MAIL_CA_FILE = str(dovecot.ca_file)


@pytest.fixture(autouse=True)
def fresh_policy():
    """A policy a test saved is rolled back with its database, not in the process's cache: forget it."""
    forget_cached_policy()
    yield
    forget_cached_policy()


@pytest.fixture(autouse=True)
def fresh_rate_limits(redis_server):
    """Inbox ids repeat from test to test; their connection-test counts must not."""
    for key in redis_server.scan_iter("switchboard:connection-test:*"):
        redis_server.delete(key)


@pytest.fixture
def relay(smtp_certificates, mail_account):
    server = DeliveringSMTPServer(account=mail_account, security=STARTTLS, certificates=smtp_certificates,
                                  username=SMTP_USER, password=SMTP_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def inbox_values(dovecot, mail_account, relay) -> dict:
    """An inbox's settings for the test servers: IMAP over implicit TLS, SMTP over STARTTLS."""
    return {
        "address": mail_account.username, "imap_host": dovecot.host, "imap_port": dovecot.ports["ssl"],
        "imap_security": Security.IMPLICIT_TLS, "imap_username": mail_account.username,
        "imap_secret": mail_account.password, "smtp_host": relay.host, "smtp_port": relay.port,
        "smtp_security": Security.STARTTLS, "smtp_username": SMTP_USER, "smtp_secret": SMTP_PASSWORD,
        "import_since": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
    }


@pytest.fixture
def setup_inbox(db, inbox_values):
    return factories.InboxFactory(**inbox_values)


class Impostor:
    """A TLS server on loopback with a certificate of its own, greeting as IMAP: a server whose certificate changed."""

    def __init__(self, directory, *, names: tuple[str, ...] = (), expired: bool = False) -> None:
        self.certificates = make_certificates(directory, "impostor")
        if names or expired:
            _reissue(self.certificates, names or ("localhost", "127.0.0.1"), expired)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = self.certificates.server_context()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                with self.context.wrap_socket(conn, server_side=True) as secured:
                    secured.sendall(b"* OK IMAP4rev1 ready\r\n")
                    secured.recv(1024)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def impostor(tmp_path):
    server = Impostor(tmp_path / "impostor")
    yield server
    server.close()


def _reissue(certificates, names: tuple[str, ...], expired: bool) -> None:
    """Replace the server certificate with one for `names`, or one that expired yesterday, from the same CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    # make_certificates keeps no CA key: a new CA signs it, and replaces the CA file clients trust.
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Setup test CA {id(certificates)}")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=10))
          .not_valid_after(now + dt.timedelta(days=10))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    until = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=10)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=5)).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    certificates.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certificates.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificates.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.fixture
def impostor_factory(tmp_path):
    started = []

    def start(**options) -> Impostor:
        server = Impostor(tmp_path / f"impostor-{len(started)}", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _general_name(name: str):
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
