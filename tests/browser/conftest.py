"""Browser tests: Debian's chromium driven by Playwright against one live server for the session.

One web server process and one Celery worker serve every test (they share the test database,
Redis and one media folder); one browser runs for the session and each test opens its own
contexts. Playwright never downloads a browser: it drives /usr/bin/chromium (CHROMIUM to change).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests.servers.asgi import free_port, wait_for, web_command
from tests.servers.processes import stop_process_group
from tests.servers.smtp import SMTPTestServer
from tests.servers.worker import ROOT, WorkerProcess, worker_environment

PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Playwright's sync API keeps an event loop running in the test's thread; Django then refuses
# database calls as if they came from async code. They do not: the tests run one thread.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
SCREENSHOTS = ROOT / "var" / "screenshots"


@dataclass
class LiveConsole:
    url: str
    port: int
    smtp: SMTPTestServer
    web_log: Path
    worker: WorkerProcess


@pytest.fixture(scope="session")
def browser_media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-media")


@pytest.fixture(autouse=True)
def media_root(browser_media, settings):
    """One media folder for the session: the live server reads what the tests store, and back."""
    settings.MEDIA_ROOT = browser_media
    return browser_media


@pytest.fixture(scope="session")
def live_console(django_db_setup, django_db_blocker, tmp_path_factory, browser_media, dovecot,
                 smtp_certificates) -> Iterator[LiveConsole]:
    """The web server (HTTP and the console socket) and a Celery worker, for the whole session."""
    logs = tmp_path_factory.mktemp("live-console")
    smtp = SMTPTestServer(certificates=smtp_certificates).start()
    with django_db_blocker.unblock():
        env = worker_environment(MEDIA_ROOT=str(browser_media), MAIL_CA_FILE=str(dovecot.ca_file))
    port = free_port()
    web_log = logs / "web.log"
    with web_log.open("wb") as log:
        web = subprocess.Popen(
            web_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(
        name="browser", log_path=logs / "celery.log",
        args=[sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=2",
              "--pool=prefork", "--hostname=browser@%h", "--without-gossip", "--without-mingle",
              "--without-heartbeat"],
        env=env)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", timeout=60)
        worker.start(wait=60)
        yield LiveConsole(f"http://127.0.0.1:{port}", port, smtp, web_log, worker)
    finally:
        worker.stop()
        stop_process_group(web)
        smtp.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture
def new_page(browser, live_console) -> Iterator[Callable]:
    """Open a page in a fresh browser context (its own cookies): `new_page()`; errors are collected
    on `page.errors` and dialogs on `page.dialogs`, both of which a test may assert empty."""
    contexts = []

    def make(**options):
        options = {"viewport": {"width": 1400, "height": 900}, **options}
        context = browser.new_context(base_url=live_console.url, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.errors, page.dialogs = [], []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    yield make
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def server_password(username: str, password: str = PASSWORD) -> None:
    """Hash the password as the live server's settings do (the tests' MD5 hasher is not among them)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    get_user_model().objects.filter(username=username).update(password=hasher.encode(password, hasher.salt()))


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    server_password(username, password)
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#app", state="attached")
    page.wait_for_selector("#live-state.ok")


@pytest.fixture
def trust_test_ca(dovecot, settings):
    settings.MAIL_CA_FILE = str(dovecot.ca_file)


def session_cookie(user) -> dict:
    """A signed-in session for `user`, as a cookie a browser context can take."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "domain": "127.0.0.1", "path": "/"}
