"""A real Dovecot IMAP server on loopback for tests (fixtures), also usable from scripts.

`DovecotServer` runs two private Dovecot instances out of one temporary folder: the main one
with a plain port that offers STARTTLS and an implicit-TLS port, and a second one with TLS
switched off, whose plain port does *not* offer STARTTLS (for the "STARTTLS required but not
offered" case). Both share the passwd-file users and the Maildirs. The certificate is signed by
a CA generated at start; `ca_file` is what clients must trust.

Dovecot refuses to run mail processes as root, so when started as root the login and internal
processes run as Debian's `dovenull`/`dovecot` users and the mail as `nobody`; started as an
ordinary user, everything runs as that user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.certificates import make_certificates

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as sock:
            sock.settimeout(2)
            if sock.recv(100).startswith(b"* OK"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"Dovecot did not answer on port {port}")


def _accounts() -> dict[str, str]:
    """Which system users run the login, internal and mail processes."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return {"login": me, "internal": me, "mail_uid": me, "mail_gid": grp.getgrgid(os.getegid()).gr_name}

    def first(*names: str) -> str:
        for name in names:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        return "nobody"

    nobody = pwd.getpwnam("nobody")
    return {"login": first("dovenull", "nobody"), "internal": first("dovecot", "nobody"),
            "mail_uid": "nobody", "mail_gid": grp.getgrgid(nobody.pw_gid).gr_name}


@dataclass
class _Instance:
    name: str
    folder: Path
    ports: dict[str, int]
    tls: bool

    @property
    def config(self) -> Path:
        return self.folder / "dovecot.conf"

    @property
    def log(self) -> Path:
        return self.folder / "dovecot.log"


@dataclass
class DovecotServer:
    """Start with `DovecotServer().start()`; stop with `.stop()`. Ports: imap, imaps, plain_only."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="switchboard-dovecot-")))
    # Accounts made before start: the auth processes read them at once (see add_user).
    accounts: int = 200
    instances: list[_Instance] = field(default_factory=list)
    ca_file: Path | None = None

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> DovecotServer:
        self.root.chmod(0o755)  # the mail user must be able to reach its Maildir below it
        accounts = _accounts()
        certificates = make_certificates(self.root, "Dovecot")
        self.ca_file, cert, key = certificates.ca_file, certificates.cert_file, certificates.key_file
        self.passwd_file.write_text("".join(f"{name}:{password}::::::\n" for name, password in self.account_list()))
        self.mail_root.mkdir(exist_ok=True)
        shutil.chown(self.mail_root, accounts["mail_uid"], accounts["mail_gid"])
        self.instances = [
            _Instance("main", self.root / "main", {"imap": free_port(), "imaps": free_port()}, tls=True),
            _Instance("plain", self.root / "plain", {"imap": free_port()}, tls=False),
        ]
        for instance in self.instances:
            instance.folder.mkdir()
            instance.config.write_text(self._config(instance, accounts, cert, key))
            # The daemon keeps inherited descriptors open: hand it a file, not a pipe, or run() waits forever.
            with (instance.folder / "startup.log").open("w+") as out:
                result = subprocess.run([DOVECOT, "-c", str(instance.config)], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, check=False)
                out.seek(0)
                if result.returncode != 0:
                    output = out.read()
                    self.stop()
                    raise RuntimeError(f"Dovecot ({instance.name}) did not start: {output}{self._read_log(instance)}")
        for instance in self.instances:
            for port in instance.ports.values():
                if port != instance.ports.get("imaps"):
                    wait_for_port(port)
        return self

    def stop(self) -> None:
        for instance in self.instances:
            if (instance.folder / "run" / "master.pid").exists():
                subprocess.run([DOVECOT, "-c", str(instance.config), "stop"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for instance in self.instances:
            pid_file = instance.folder / "run" / "master.pid"
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def _config(self, instance: _Instance, accounts: dict[str, str], cert: Path, key: Path) -> str:
        listeners = f"inet_listener imap {{\n    address = {HOST}\n    port = {instance.ports['imap']}\n  }}\n"
        if instance.tls:
            listeners += (f"  inet_listener imaps {{\n    address = {HOST}\n    port = {instance.ports['imaps']}\n"
                          "    ssl = yes\n  }\n")
            ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2\n"
            if Path("/usr/share/dovecot/dh.pem").exists():
                ssl += "ssl_dh = </usr/share/dovecot/dh.pem\n"
        else:
            ssl = "ssl = no\n"
        run = instance.folder / "run"
        return f"""# Generated by tests/servers/dovecot.py for one test session.
base_dir = {run}
state_dir = {instance.folder / "state"}
instance_name = switchboard-test-{instance.name}-{os.getpid()}
log_path = {instance.log}
info_log_path = {instance.log}
protocols = imap
listen = {HOST}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
# Trusted: no auth penalty (growing delays after a failed login) for the tests' own failures.
login_trusted_networks = 127.0.0.0/8
default_login_user = {accounts["login"]}
default_internal_user = {accounts["internal"]}
mail_uid = {accounts["mail_uid"]}
mail_gid = {accounts["mail_gid"]}
first_valid_uid = 1
mail_location = maildir:{self.mail_root}/%u/Maildir
mail_max_userip_connections = 200
# Test mail is throwaway: no fsync per message keeps APPEND fast.
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd_file}
  default_fields = home={self.mail_root}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  {listeners}}}
service anvil {{
  chroot =
}}
"""

    @staticmethod
    def _read_log(instance: _Instance) -> str:
        return instance.log.read_text(errors="replace") if instance.log.exists() else ""

    # --- what tests use -----------------------------------------------------------------------
    @property
    def passwd_file(self) -> Path:
        return self.root / "passwd"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    @property
    def host(self) -> str:
        return HOST

    @property
    def ports(self) -> dict[str, int]:
        """`ssl` (implicit TLS), `starttls` (plain, STARTTLS offered), `none` (plain, no STARTTLS)."""
        main, plain = self.instances
        return {"ssl": main.ports["imaps"], "starttls": main.ports["imap"], "none": plain.ports["imap"]}

    def log(self, which: str = "main") -> str:
        return self._read_log(next(i for i in self.instances if i.name == which))

    def account_list(self) -> list[tuple[str, str]]:
        """The (username, password) of the accounts created before start."""
        return [(f"user{n}@switchboard.test", f"secret-{n}") for n in range(self.accounts)]

    def add_user(self, username: str, password: str) -> None:
        """Create (or replace) a mail account after start. Slow: prefer the accounts of account_list()."""
        lines = [line for line in self.passwd_file.read_text().splitlines() if not line.startswith(f"{username}:")]
        lines.append(f"{username}:{password}::::::")
        staged = self.passwd_file.with_suffix(".new")
        staged.write_text("\n".join(lines) + "\n")
        staged.replace(self.passwd_file)  # atomic: auth never reads a half-written file
        # Each auth process re-reads the file when it notices a change, not always at once.
        for port in (self.ports["starttls"], self.ports["none"]):
            self._wait_for_login(port, username, password)

    def _wait_for_login(self, port: int, username: str, password: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            imap = imaplib.IMAP4(HOST, port, timeout=10)
            try:
                imap.login(username, password)
                return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                with contextlib.suppress(Exception):
                    imap.logout()

    @contextlib.contextmanager
    def client(self, username: str, password: str) -> Iterator[imaplib.IMAP4]:
        """Another mail client: plain IMAP on loopback, as the customer's colleague would be."""
        imap = imaplib.IMAP4(HOST, self.ports["none"], timeout=30)
        try:
            imap.login(username, password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def append(self, username: str, password: str, messages: Iterable[bytes], *, folder: str = "INBOX",
               flags: str = "", when: dt.datetime | None = None) -> list[int]:
        """APPEND messages (with an optional INTERNALDATE) and return their UIDs."""
        uids = []
        with self.client(username, password) as imap:
            imap.create(folder)  # fails harmlessly when it exists
            for raw in messages:
                date = imaplib.Time2Internaldate(when or dt.datetime.now(dt.UTC))
                typ, data = imap.append(folder, f"({flags})" if flags else None, date, raw)
                assert typ == "OK", data
                # APPENDUID (RFC 4315): "[APPENDUID <uidvalidity> <uid>] Append completed."
                uids.append(int(data[0].split(b"]")[0].split()[-1]))
        return uids

    def flags(self, username: str, password: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID → flags of every message of a folder, as another client sees them."""
        with self.client(username, password) as imap:
            typ, _ = imap.select(f'"{folder}"', readonly=True)
            assert typ == "OK", folder
            typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            result = {}
            for line in data:
                if not line:
                    continue
                text = line.decode()
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                result[uid] = set(text.split("FLAGS (")[1].split(")")[0].split())
            return result

    def mark_read(self, username: str, password: str, uids: Iterable[int], folder: str = "INBOX") -> None:
        with self.client(username, password) as imap:
            imap.select(f'"{folder}"')
            imap.uid("STORE", ",".join(map(str, uids)), "+FLAGS", r"(\Seen)")

    def doveadm(self, *args: str) -> str:
        main = self.instances[0]
        result = subprocess.run([DOVEADM, "-c", str(main.config), *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def set_uidvalidity(self, username: str, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", username, "--uid-validity", str(value), folder)

    def uidvalidity(self, username: str, folder: str = "INBOX") -> int:
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", username, "uidvalidity", folder)
        return int(out.split("uidvalidity=")[1].split()[0])


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One real Dovecot for the whole session; see DovecotServer."""
    server = DovecotServer().start()
    yield server
    server.stop()


@dataclass
class MailAccount:
    server: DovecotServer
    username: str
    password: str

    def append(self, messages: Iterable[bytes], **kwargs) -> list[int]:
        return self.server.append(self.username, self.password, messages, **kwargs)

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        return self.server.flags(self.username, self.password, folder)

    def mark_read(self, uids: Iterable[int], folder: str = "INBOX") -> None:
        self.server.mark_read(self.username, self.password, uids, folder)

    def set_uidvalidity(self, value: int, folder: str = "INBOX") -> None:
        self.server.set_uidvalidity(self.username, value, folder)


@pytest.fixture(scope="session")
def _unused_accounts(dovecot) -> list[tuple[str, str]]:
    return list(reversed(dovecot.account_list()))


@pytest.fixture
def mail_account(dovecot, _unused_accounts) -> MailAccount:
    """A fresh, empty mailbox on the session's Dovecot."""
    if _unused_accounts:
        return MailAccount(dovecot, *_unused_accounts.pop())
    username = f"extra{len(dovecot.account_list())}-{time.monotonic_ns()}@switchboard.test"
    dovecot.add_user(username, "extra-secret")
    return MailAccount(dovecot, username, "extra-secret")
